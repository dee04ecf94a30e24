"""An Ollama ``Modelfile`` for an exported model: how Ollama must prompt it and when to stop.

Users who find "the GGUF answers worse than the merged model" usually run it with a template or stop
tokens other than the ones it was trained with (LLaMA-Factory #6020), so everything is written out
rather than left to Ollama's guess:

- ``TEMPLATE``: the family's chat template in Ollama's Go syntax (``ModelFamily.ollama_template``);
  a pre-training stage continues text, so its template is the prompt itself;
- ``SYSTEM``: the one given (``--system``), else the one the exported chat template renders when a
  conversation has none (Qwen2.5's "You are Qwen, ..."): the model was trained with it;
- ``PARAMETER stop``: the family's turn end and end of text;
- sampling PARAMETERs from the exported ``generation_config.json``, else ``recipes chat``'s defaults;
  ``num_ctx``: the longest sequence the run trained on, at least Ollama's usual 2048, never past the
  model's ``max_position_embeddings``.
"""

from __future__ import annotations

import json
from pathlib import Path

# generation_config.json key -> Ollama PARAMETER, with the default `recipes chat` samples with
SAMPLING = (("temperature", "temperature", 0.7), ("top_p", "top_p", 0.8), ("top_k", "top_k", None),
            ("repetition_penalty", "repeat_penalty", None))
MIN_CONTEXT = 2048
MARK = "\x01system\x01"


def default_system(tokenizer) -> str | None:
    """The system prompt the tokenizer's chat template adds when a conversation has none, found by
    rendering with and without one (None when it adds none)."""
    user = [{"role": "user", "content": "hello"}]
    alone = tokenizer.apply_chat_template(user, tokenize=False)
    marked = tokenizer.apply_chat_template([{"role": "system", "content": MARK}, *user], tokenize=False)
    if MARK not in marked:
        return None
    before, after = marked.split(MARK, 1)
    if alone == before + after or not (alone.startswith(before) and alone.endswith(after)):
        return None
    return alone[len(before):len(alone) - len(after)]


def trained_context(recipe: dict) -> int | None:
    """The longest ``cutoff_len`` of the run's stages (recipe.json), or None."""
    lengths = [s.get("settings", {}).get("cutoff_len") for s in recipe.get("stages", []) if isinstance(s, dict)]
    return max((n for n in lengths if isinstance(n, int)), default=None)


def _quoted(text: str) -> str:
    if '"""' in text:
        raise ValueError('a Modelfile cannot hold """ inside a TEMPLATE or SYSTEM')
    return f'"""{text}"""'


def modelfile(source: str, merged: Path, *, chat: bool, family, system: str | None, context: int | None) -> str:
    """The Modelfile text for ``FROM source``; ``merged``: the exported HF folder it describes (its
    config.json and generation_config.json are read)."""
    config = json.loads((merged / "config.json").read_text(encoding="utf-8"))
    generation_path = merged / "generation_config.json"
    generation = json.loads(generation_path.read_text(encoding="utf-8")) if generation_path.is_file() else {}
    lines = [f"FROM {source}"]
    if chat:
        lines.append(f"TEMPLATE {_quoted(family.ollama_template())}")
        if system:
            lines.append(f"SYSTEM {_quoted(system)}")
    else:
        lines.append('TEMPLATE """{{ .Prompt }}"""')
    stops = [family.turn_end, family.end_of_text] if chat else [family.end_of_text]
    lines += [f'PARAMETER stop "{stop}"' for stop in stops]
    for key, parameter, fallback in SAMPLING:
        value = generation.get(key) if generation.get("do_sample") else None
        value = fallback if value is None else value
        if value is not None:
            lines.append(f"PARAMETER {parameter} {value}")
    limit = config.get("max_position_embeddings")
    num_ctx = max(context or MIN_CONTEXT, MIN_CONTEXT)
    lines.append(f"PARAMETER num_ctx {min(num_ctx, limit) if isinstance(limit, int) else num_ctx}")
    return "\n".join(lines) + "\n"
