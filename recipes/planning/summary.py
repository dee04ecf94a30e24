"""What `recipes validate` says about a good recipe: the plan in a few lines (or as JSON)."""

from __future__ import annotations

from recipes.config.counting import count_all
from recipes.config.loaded import LoadedRecipe
from recipes.config.schema import Quantization


def summarize(loaded: LoadedRecipe) -> dict:
    """The plan as plain data: model, stages in order with what each starts from, effective batch,
    and data sources with file and record counts (None where not cheap to count)."""
    recipe = loaded.recipe
    info = loaded.model
    stages = []
    for index, stage in enumerate(recipe.stages):
        s = stage.settings(recipe.defaults)
        sources = []
        weights = sum(source.weight or 0 for source in stage.data)
        for source_index, source in enumerate(stage.data):
            resolved = loaded.sources[(index, "data", source_index)]
            sources.append({"name": source.default_name(), "path": source.path or f"{source.dataset_info} [{source.dataset}]",
                            "format": resolved.format, "files": len(resolved.files),
                            "records": count_all(resolved.files), "weight": source.weight,
                            "share": source.weight / weights if source.weight and weights else None,
                            "max_samples": source.max_samples, "max_tokens": source.max_tokens})
        stages.append({
            "name": stage.name, "kind": stage.kind,
            "base": recipe.base_of(index),
            "effective_batch": s.per_device_train_batch_size * s.gradient_accumulation_steps,
            "per_device_train_batch_size": s.per_device_train_batch_size,
            "gradient_accumulation_steps": s.gradient_accumulation_steps,
            "learning_rate": s.learning_rate, "cutoff_len": s.cutoff_len,
            "num_train_epochs": s.num_train_epochs, "max_steps": s.max_steps,
            "lora_rank": s.lora_rank, "lora_alpha": s.lora_alpha, "data": sources,
            "quantization": (recipe.stage_quantization(index) or Quantization()).backend,
        })
    return {
        "name": loaded.name,
        "model": {"path": recipe.model.path, "model_type": info.model_type if info else None,
                  "context": info.context if info else None, "config": info.source if info else None},
        "quantization": recipe.quantization.backend if recipe.quantization else "none",
        "stages": stages,
        "benchmarks": _benchmarks(loaded),
    }


def _benchmarks(loaded: LoadedRecipe) -> list[dict]:
    """Each benchmark as it will be scored (validate has read its files already)."""
    from recipes.benchmarks.selection import chosen_items, plan_benchmark

    out = []
    for spec in loaded.recipe.benchmarks:
        chosen = chosen_items(plan_benchmark(spec, loaded.path.resolve().parent, 0))
        if chosen is None:  # a scorer plugin's own task files
            continue
        out.append({"name": spec.name, "layout": chosen.layout, "split": chosen.split, "subjects": len(chosen.shots),
                    "questions": chosen.available, "shots": spec.shots, "max_per_subject": spec.max_per_subject,
                    "chat": spec.chat})
    return out


def summary_lines(summary: dict) -> list[str]:
    model = summary["model"]
    known = (f" ({model['model_type']}, context {model['context']})" if model["model_type"]
             else " (config.json not at hand: not checked against the model)")
    lines = [f"model {model['path']}{known}, quantization {summary['quantization']}"]
    for number, st in enumerate(summary["stages"], start=1):
        length = f"{st['max_steps']} steps" if st["max_steps"] else f"{st['num_train_epochs']:g} epoch(s)"
        lines.append(f"{number}. {st['name']} ({st['kind']}) from {st['base']}: effective batch "
                     f"{st['effective_batch']} ({st['per_device_train_batch_size']} x "
                     f"{st['gradient_accumulation_steps']}), lr {st['learning_rate']:g}, cutoff_len "
                     f"{st['cutoff_len']}, LoRA r={st['lora_rank']} alpha={st['lora_alpha']:g}, {length}"
                     + (f", quantization {st['quantization']}" if st["quantization"] != summary["quantization"] else ""))
        for source in st["data"]:
            records = f", {source['records']:,} records" if source["records"] is not None else ""
            mix = f"; weight {source['weight']:g}: {source['share']:.0%} of the training tokens" if source["weight"] else ""
            caps = "".join(f", at most {source[k]:,} {k[4:]}" for k in ("max_samples", "max_tokens") if source[k])
            lines.append(f"   data {source['path']} ({source['format']}): {source['files']} file(s){records}{caps}{mix}")
    for b in summary.get("benchmarks") or []:
        cap = f", at most {b['max_per_subject']} per subject" if b["max_per_subject"] else ""
        lines.append(f"benchmark {b['name']}: {b['questions']:,} questions in {b['subjects']} subject(s) ({b['layout']} "
                     f"layout, split {b['split']}), {b['shots']}-shot{cap}" + (", plain and chat prompts" if b["chat"] else ""))
    return lines
