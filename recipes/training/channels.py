"""The per-source training loss, ms-swift's "channel" view: in a stage with several sources each
logged step also carries ``source_loss/NAME``, the mean cross-entropy of the labelled tokens from source
NAME in the micro-batches since the last log (in ``metrics.jsonl``, TensorBoard and the report's
``loss.png``). The items of such a stage carry each token's source (``recipes.data.layout``); the
token losses come from the chunked loss (``token_losses``). A loss plugin that gives none (the
standard loss) leaves the view out, and the stage says so once.
"""

from __future__ import annotations

import torch

from recipes.data.tokenization import IGNORE_INDEX

PREFIX = "source_loss/"  # not "loss/NAME": MLflow's file store keeps "loss" as a file, not a folder


class Channels:
    def __init__(self, names: list[str]):
        self.names = list(names)
        self.sums = torch.zeros(len(names), dtype=torch.float64)
        self.counts = torch.zeros(len(names), dtype=torch.float64)
        self.missing = False  # the loss gave no token losses

    def add(self, sources: torch.Tensor, labels: torch.Tensor, losses: list) -> None:
        """One micro-batch: ``sources`` and ``labels`` as collated, ``losses`` what the loss recorded."""
        if not losses:
            self.missing = True
            return
        values = torch.cat(losses).double().cpu()
        of = sources[..., 1:][labels[..., 1:] != IGNORE_INDEX].cpu()  # the source of each predicted token
        if len(of) != len(values) or (of < 0).any():
            raise ValueError(f"per-source loss: {len(values)} token losses for {len(of)} labelled tokens")
        self.sums += torch.bincount(of, weights=values, minlength=len(self.names))
        self.counts += torch.bincount(of, minlength=len(self.names)).double()

    def take(self) -> dict:
        """``source_loss/NAME`` since the last call, summed over the processes; then starts afresh."""
        from recipes.training import distributed

        sums, counts = self.sums.clone(), self.counts.clone()
        if distributed.world_size() > 1:
            import torch.distributed as dist

            both = torch.stack([sums, counts]).to(distributed_device())
            dist.all_reduce(both)
            sums, counts = both.cpu()
        self.sums.zero_(), self.counts.zero_()
        return {f"{PREFIX}{name}": round(float(s / c), 4) for name, s, c in zip(self.names, sums, counts) if c > 0}


def distributed_device() -> torch.device:
    return torch.device("cuda", torch.cuda.current_device()) if torch.cuda.is_available() else torch.device("cpu")
