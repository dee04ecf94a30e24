"""The run report's curves as PNG images: train loss per stage (loss.png) and, when the run logged
evaluations, eval loss per stage (eval.png). matplotlib with the Agg backend: no display needed."""

from __future__ import annotations

from pathlib import Path


def draw_curves(curves: dict, folder: Path) -> list[Path]:
    """``curves``: stage -> {"train": [[step, loss], ...], "eval": [[step, eval_loss], ...], and
    "train/NAME": a source's training loss}.
    Returns the images written."""
    written = []
    for kind, file, label in (("train", "loss.png", "train loss"), ("eval", "eval.png", "eval loss")):
        stages = {name: c[kind] for name, c in curves.items() if c.get(kind)}
        # a stage with several sources: its per-source losses beside the overall one (``train/NAME``)
        extra = {name: {k[len(kind) + 1:]: v for k, v in c.items() if k.startswith(f"{kind}/") and v}
                 for name, c in curves.items()}
        if stages:
            written.append(_draw(stages, folder / file, label, extra))
    return written


def _draw(stages: dict, path: Path, label: str, extra: dict | None = None) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib import pyplot

    figure, axes = pyplot.subplots(1, len(stages), figsize=(5 * len(stages), 3.5), squeeze=False)
    for ax, (name, points) in zip(axes[0], stages.items()):
        steps, values = zip(*points)
        ax.plot(steps, values, marker="o" if len(points) < 30 else None, markersize=3, label="all")
        for source, series in (extra or {}).get(name, {}).items():
            xs, ys = zip(*series)
            ax.plot(xs, ys, linewidth=1, alpha=0.8, label=source)
        if (extra or {}).get(name):
            ax.legend(fontsize=7)
        ax.set_title(name)
        ax.set_xlabel("step")
        ax.set_ylabel(label)
        ax.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    pyplot.close(figure)
    return path
