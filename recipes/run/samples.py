"""The recipe's ``samples``: prompts answered greedily by the starting model and by every stage's
merged model, so that the report shows side by side what each stage did to the answers.

A pre-training stage continues each prompt as plain text; an SFT stage answers it as a user message
through the chat template. The starting model answers each prompt the way every stage that uses it
does (so both ways in a pre-training + SFT plan), which is what each stage's answers compare with.

Where the answers are kept:
- the starting model's: ``<run>/model_samples.json``, with the model's fingerprint, the prompts and
  the token budget: answered once, again only when one of these changes;
- a stage's: ``samples`` in its ``stage.json`` and in its manifest ``result``; a stage trained again
  rewrites both, so its samples are answered again with it. Changing only the samples retrains nothing.
Everything answered is said on the console and in ``run.log``.
"""

from __future__ import annotations

import json
from collections import Counter
from pathlib import Path

from recipes.run.manifest import read_json_object

MODEL_SAMPLES = "model_samples.json"
WHO_MODEL = "model"


def answer_samples(model_dir, prompts, kind: str, max_new_tokens: int = 64, precision: str | None = None,
                   trust_remote_code: bool = False, generator=None) -> list[dict]:
    """Answer ``prompts`` greedily with the model folder ``model_dir`` as a stage of ``kind``
    ("pretrain": continued as text; "sft": answered as chat). One dict per prompt: prompt, mode,
    answer, new_tokens, stopped, max_new_tokens."""
    from recipes.training.inference import generate, load_generator, render

    generator = generator or load_generator(model_dir, precision, trust_remote_code)
    mode = generator.mode(kind)
    out = []
    for prompt in prompts:
        rendered = render(generator, mode, [{"role": "user", "content": prompt}], prompt)
        result = generate(generator, rendered, max_new_tokens)
        out.append({"prompt": prompt, "mode": mode, "answer": result["answer"], "new_tokens": result["new_tokens"],
                    "stopped": result["stopped"], "max_new_tokens": max_new_tokens})
    return out


def _wanted(records: list[dict] | None, requests: list[tuple[str, str]], max_new_tokens: int) -> bool:
    """Whether stored answers differ from the (prompt, kind) requests at this token budget."""
    have = Counter((r.get("prompt"), r.get("kind"), r.get("max_new_tokens")) for r in records or [] if isinstance(r, dict))
    return have != Counter((prompt, kind, max_new_tokens) for prompt, kind in requests)


def say_answers(who: str, records: list[dict], say) -> None:
    for index, r in enumerate(records, 1):
        how = "continued" if r["mode"] == "text" else "answered"
        say(f"sample {index} {how} by {who}: {json.dumps(r['prompt'], ensure_ascii=False)} -> "
            f"{json.dumps(r['answer'], ensure_ascii=False)}")


def samples_pending(plan, model_path: str) -> bool:
    """Whether run_samples would answer anything (no torch): the starting model's or a stage's answers
    are missing or were given to other prompts."""
    from recipes.run.fingerprint import model_fingerprint

    budget = plan.samples_max_new_tokens
    requests = list(dict.fromkeys((prompt, s.kind) for s in plan.stages for prompt in s.samples))
    stored = read_json_object(plan.run_dir / MODEL_SAMPLES)
    if requests and (stored.get("model_fingerprint") != model_fingerprint(model_path, plan.revision)
                     or _wanted(stored.get("samples"), requests, budget)):
        return True
    for stage in plan.stages:
        result = read_json_object(stage.folder / "stage.json")
        if result and _wanted(result.get("samples"), [(p, stage.kind) for p in stage.samples], budget):
            return True
    return False


def run_samples(plan, model_path: str, manifest, say) -> None:
    """Answer every stage's samples on its merged model, and the starting model's, where not answered
    yet (see the module docstring). Called by the runner once every stage is done, on the main process."""
    from recipes.run.fingerprint import model_fingerprint
    from recipes.run.manifest import write_atomically

    budget = plan.samples_max_new_tokens
    requests = list(dict.fromkeys((prompt, s.kind) for s in plan.stages for prompt in s.samples))
    model_file = plan.run_dir / MODEL_SAMPLES
    stored = read_json_object(model_file)
    fingerprint = model_fingerprint(model_path, plan.revision) if requests else None
    trained = [read_json_object(s.folder / "stage.json").get("precision") for s in plan.stages]
    if requests and (stored.get("model_fingerprint") != fingerprint or _wanted(stored.get("samples"), requests, budget)):
        from recipes.training.inference import load_generator

        say(f"samples: the starting model answers {len(requests)} (greedy, up to {budget} new tokens)")
        generator = load_generator(model_path, trained[0], plan.trust_remote_code, say)
        records = []
        for kind in dict.fromkeys(k for _, k in requests):
            answered = answer_samples(None, [p for p, k in requests if k == kind], kind, budget, generator=generator)
            records += [{**r, "kind": kind} for r in answered]
        del generator
        write_atomically(model_file, json.dumps({"model_path": model_path, "model_fingerprint": fingerprint,
                                                 "samples": records}, indent=2, ensure_ascii=False) + "\n")
        say_answers(WHO_MODEL, records, say)
    for stage, precision in zip(plan.stages, trained):
        path = stage.folder / "stage.json"
        result = read_json_object(path)
        if not result or not _wanted(result.get("samples"), [(p, stage.kind) for p in stage.samples], budget):
            continue
        records = [{**r, "kind": stage.kind} for r in answer_samples(stage.merged_dir, list(stage.samples),
                                                                      stage.kind, budget, precision,
                                                                      plan.trust_remote_code)] if stage.samples else []
        result["samples"] = records  # [] for a stage whose samples were taken away
        write_atomically(path, json.dumps(result, indent=2, ensure_ascii=False))
        entry = manifest.stage(stage.name) or {}
        if entry.get("result") is not None:
            manifest.update(stage.name, result={**entry["result"], "samples": records})
        say_answers(stage.name, records, say)


def report_samples(run_dir: Path, stage_results: dict[str, dict]) -> list[dict]:
    """The report's samples, side by side: one entry per prompt, in the stages' order, with the answer
    of every stage that answered it, each preceded by the starting model's answer put the same way:
    ``[{"prompt", "answers": [{"by", "mode", "answer", "new_tokens", "stopped"}]}]``."""
    def records(values) -> list[dict]:
        return [r for r in values or [] if isinstance(r, dict) and isinstance(r.get("prompt"), str)]

    def answer(by: str, r: dict) -> dict:
        return {"by": by, "mode": r.get("mode"), "answer": r.get("answer", ""), "new_tokens": r.get("new_tokens"),
                "stopped": r.get("stopped")}

    model = {(r["prompt"], r.get("kind")): r for r in records(read_json_object(Path(run_dir) / MODEL_SAMPLES).get("samples"))}
    groups: dict[str, dict] = {}
    for name, result in stage_results.items():
        for r in records(result.get("samples")):
            group = groups.setdefault(r["prompt"], {"prompt": r["prompt"], "answers": []})
            start = model.pop((r["prompt"], r.get("kind")), None)  # once per prompt and way of putting it
            if start is not None:
                group["answers"].append(answer(WHO_MODEL, start))
            group["answers"].append(answer(name, r))
    return list(groups.values())
