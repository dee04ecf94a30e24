"""What scoring the benchmarks will cost, for `recipes plan`: items, rows, prompt tokens, the memory a
scoring batch adds to a stage's (activations of one forward without gradients, one position's logits
per question) and the time at an assumed forward throughput. No torch: prompt tokens come from the
prompts' UTF-8 size (the planner's bytes per token), or from the tokenizer with ``--tokenize``.
"""

from __future__ import annotations

from recipes.planning.memory import BYTES, resolve_precision

# forward FLOP/s assumed for the time estimate (dense prefill of a 7B model in bf16 on one recent
# data-centre GPU reaches several times this; a consumer GPU or CPU far less): an order of magnitude
ASSUMED_FLOPS = {"cuda": 100e12, "cpu": 0.5e12}
# UTF-8 bytes per Qwen token of a Chinese prompt (measured with the Qwen tokenizer on the bundled
# exam's 5-shot prompts: 2.5; `recipes plan --tokenize` counts exactly); English prompts take the
# planner's figure
ZH_BYTES_PER_TOKEN = 2.5


def benchmarks_estimate(plan, shape, device: str, stages: list[dict], tokenizer=None) -> list[dict]:
    """Per benchmark of ``plan``: ``stages`` are recipe_estimate's stage entries (their memory)."""
    from recipes.benchmarks.prompts import chat_prompt, completion_prompt
    from recipes.benchmarks.selection import chosen_items
    from recipes.config.counting import BYTES_PER_TOKEN

    rows = 1 + sum(1 for stage in plan.stages if stage.benchmarks)
    precision = resolve_precision(plan.stages[0].settings.precision, device)
    width = BYTES[precision]
    out = []
    for benchmark in plan.benchmarks:
        chosen = chosen_items(benchmark)
        if chosen is None:  # a scorer plugin's own task files: not known here
            out.append({"name": benchmark.name, "scorer": benchmark.scorer, "rows": rows, "estimated": False})
            continue
        prompts = [completion_prompt(i, chosen.shots[i.subject], chosen.language) for i in chosen.items]
        if tokenizer is not None:
            lengths = [len(tokenizer(p, add_special_tokens=False).input_ids) for p in prompts]
            if benchmark.chat and tokenizer.chat_template:
                lengths += [len(tokenizer(chat_prompt(tokenizer, i, chosen.shots[i.subject], chosen.language),
                                          add_special_tokens=False).input_ids) for i in chosen.items]
        else:
            per_token = ZH_BYTES_PER_TOKEN if chosen.language == "zh" else BYTES_PER_TOKEN
            lengths = [round(len(p.encode("utf-8")) / per_token) for p in prompts] * (2 if benchmark.chat else 1)
        tokens, longest = sum(lengths), max(lengths)
        batch = min(benchmark.batch_size, len(prompts))
        batch_tokens = batch * longest  # left-padded to the batch's longest prompt
        added = (batch_tokens * width * (4 * shape.hidden + shape.query_width + 2 * shape.kv_width
                                         + 3 * shape.mlp_width)
                 + batch * shape.vocab * (width + 4))  # one position's logits per question, and their fp32 copy
        peaks = [stage["memory"]["total"] - stage["memory"]["activations"] - stage["memory"]["logits_and_loss"]
                 + added for stage in stages]
        flops = 2 * shape.total_parameters * tokens
        out.append({"name": benchmark.name, "items": len(chosen.items), "available": chosen.available,
                    "subjects": len(chosen.shots), "shots": benchmark.shots, "chat": benchmark.chat, "rows": rows,
                    "prompt_tokens_per_row": tokens, "longest_prompt": longest, "batch": batch,
                    "tokens_from": "tokenizer" if tokenizer is not None else "prompt size ("
                    + f"{ZH_BYTES_PER_TOKEN if chosen.language == 'zh' else BYTES_PER_TOKEN} bytes per token)",
                    "memory_added": added, "peak": max(peaks) if peaks else added,
                    "forward_flops_per_row": flops, "assumed_flops_per_second": ASSUMED_FLOPS[device],
                    "seconds_per_row": flops / ASSUMED_FLOPS[device],
                    "seconds": rows * flops / ASSUMED_FLOPS[device]})
    return out


def benchmark_lines(entries: list[dict], size) -> list[str]:
    lines = []
    for b in entries:
        if b.get("estimated") is False:
            lines.append(f"benchmark {b['name']}: scored by {b['scorer']} from its own task files ({b['rows']} rows); "
                         "not estimated")
            continue
        subset = f" (of {b['available']:,})" if b["available"] != b["items"] else ""
        lines.append(f"benchmark {b['name']}: {b['items']:,} questions{subset} in {b['subjects']} subject(s), "
                     f"{b['shots']}-shot{', plain and chat prompts' if b['chat'] else ''}; {b['rows']} rows "
                     f"(the starting model and after each stage)")
        lines.append(f"   {b['prompt_tokens_per_row']:,} prompt tokens per row (longest {b['longest_prompt']:,}; "
                     f"from {b['tokens_from']}); batch {b['batch']} adds {size(b['memory_added'])} to a stage "
                     f"(peak while scoring: {size(b['peak'])})")
        lines.append(f"   time: about {b['seconds_per_row']:,.1f} s per row, {b['seconds']:,.1f} s in all, at an assumed "
                     f"{b['assumed_flops_per_second'] / 1e12:g} TFLOP/s forward")
    return lines
