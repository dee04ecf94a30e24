"""`recipes report`, `recipes export` and `recipes chat`: what a finished run gives."""

from __future__ import annotations

from pathlib import Path

import click

from recipes.cli.common import main, _console, friendly


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON document.")
@friendly
def report(run_dir, as_json):
    """Re-draw the report of the run folder RUN: a table per stage (steps, tokens, time, tokens/s,
    final loss, eval perplexity before and after, peak memory) and RUN/report/ (report.md,
    report.json, loss.png, eval.png)."""
    from recipes.outputs.report import write_report

    folder = write_report(run_dir, None if as_json else _console())
    if as_json:
        click.echo((folder / "report.json").read_text(encoding="utf-8"), nl=False)


@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--to", "to", type=click.Path(path_type=Path), help="The folder to write (new, or empty; see --force).")
@click.option("--stage", help="The stage to export (default: the last one).")
@click.option("--merged", "what", flag_value="merged", default=True,
              help="An HF model folder: the adapter merged into the base (the default).")
@click.option("--adapter", "what", flag_value="adapter", help="The LoRA adapter (PEFT), its base named in it.")
@click.option("--ollama", "what", flag_value="ollama", help="The merged folder plus an Ollama Modelfile (template, "
              "stop tokens, system prompt, parameters) and the command that creates the Ollama model.")
@click.option("--gguf", metavar="TYPE", help="One GGUF file (f16, bf16, q8_0; q4_k_m, q5_k_m with llama.cpp "
              "installed) plus a Modelfile, checked against the merged weights (the recipes-gguf plugin).")
@click.option("--format", "target", metavar="NAME[:VARIANT]", help="A format a plugin provides (--gguf TYPE is "
              "--format gguf:TYPE).")
@click.option("--system", metavar="TEXT", help="--ollama/--gguf: the Modelfile's SYSTEM (default: the one the "
              "chat template adds when there is none).")
@click.option("--dtype", help="--merged: bf16, fp16 or fp32 (default: as the stage saved it).")
@click.option("--max-shard-size", default="5GB", show_default=True, help="--merged: the largest safetensors file.")
@click.option("--force", is_flag=True, help="Replace --to even if it is not empty.")
@friendly
def export(run_dir, to, stage, what, gguf, target, system, dtype, max_shard_size, force):
    """Export a finished stage of the run folder RUN to a folder that works on its own: the merged
    model (loads in transformers and HF-folder inference servers such as vLLM and SGLang), the
    adapter, an Ollama folder or a GGUF file, with the tokenizer and chat template. Written aside and
    moved into place when complete."""
    from recipes.errors import RecipeError
    from recipes.outputs.export import export as write_export
    from recipes.outputs.export import export_request

    if gguf is not None and target is not None:
        raise RecipeError("--gguf TYPE is --format gguf:TYPE: give one of them")
    target = f"gguf:{gguf}" if gguf is not None else target
    request = export_request(run_dir, to, stage, what, dtype, max_shard_size, force, target, system)  # no torch yet
    console = _console()
    for line in write_export(request, console):
        console.print(line, markup=False)

@main.command()
@click.argument("run_dir", metavar="RUN", type=click.Path(path_type=Path))
@click.option("--stage", help="The stage to talk to (default: the last one).")
@click.option("--prompt", metavar="TEXT", help="Answer TEXT once and exit ('-': read it from standard input).")
@click.option("--system", metavar="TEXT", help="A system message (SFT stages; /system TEXT in the chat).")
@click.option("--max-new-tokens", type=click.IntRange(min=1), default=512, show_default=True)
@click.option("--temperature", type=click.FloatRange(min=0), default=0.7, show_default=True, help="0: greedy.")
@click.option("--top-p", type=click.FloatRange(0, 1, min_open=True), default=0.8, show_default=True)
@click.option("--verbose", "-v", is_flag=True, help="Print each prompt as the model sees it, with its token count "
              "(to standard error).")
@friendly
def chat(run_dir, stage, prompt, system, max_new_tokens, temperature, top_p, verbose):
    """Talk to a finished stage of the run folder RUN: its merged model, tokens printed as they come.

    An SFT stage keeps a conversation through its chat template (/reset clears it, /system TEXT sets
    the system message, /exit leaves); a pre-training stage continues each prompt as text. Ctrl-C
    stops the answer being written. Runs on the GPU when there is one, in the stage's precision."""
    from recipes.outputs.chat import Options, chat_target, run_chat

    target = chat_target(run_dir, stage)  # no torch yet
    run_chat(target, prompt, Options(max_new_tokens, temperature, top_p, system, verbose))


