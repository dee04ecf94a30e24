"""The run report's last section: how to run the last finished stage elsewhere (docs/export.md)."""

from __future__ import annotations

import shlex


def handoff_markdown(report: dict) -> list[str]:
    """The commands that export the last finished stage and run it with vLLM or SGLang, Ollama,
    llama.cpp and LM Studio ([] when no stage is done)."""
    done = [row for row in report.get("stages", []) if row.get("status") == "done"]
    if not done:
        return []
    stage = done[-1]["stage"]
    run = shlex.quote(str(report["run_dir"]))
    out = shlex.quote(f"{report['run_dir']}-{stage}")
    return ["", "## Run the model elsewhere", "",
            f"The last finished stage, `{stage}`, exported (see docs/export.md):", "",
            "| with | export | then |", "|---|---|---|",
            f"| vLLM, SGLang, transformers | `recipes export {run} --to {out}` | `vllm serve {out}` or "
            f"`python -m sglang.launch_server --model-path {out}` |",
            f"| Ollama | `recipes export {run} --to {out}-ollama --ollama` | `ollama create {stage} -f "
            f"{out}-ollama/Modelfile` (add `-q q4_K_M` to quantize), then `ollama run {stage}` |",
            f"| llama.cpp, LM Studio | `recipes export {run} --to {out}-gguf --gguf q8_0` (the recipes-gguf "
            f"plugin) | `llama-cli -m {out}-gguf/*.gguf -cnv`, or `lms import` the file |", ""]
