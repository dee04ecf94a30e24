"""Base-model SFT: train the rows of ChatML's tokens in the input embedding and the output layer.

A base model has not learned ``<|im_start|>`` and ``<|im_end|>``: Qwen's own finetune script therefore
trains the whole embedding and output layer when it LoRA-tunes a base model (35.1 GB instead of
23.8 GB at 2048 tokens on Qwen-7B, Qwen's table). Here only those tokens' rows train: peft's
``trainable_token_indices`` (a ``TrainableTokensWrapper`` per layer, the new rows saved in the adapter
file, folded into the weights by ``merge_and_unload``), a few kilobytes.

``train_tokens`` (a stage setting):

- a list of token strings: those tokens' rows train (each must be one token of the tokenizer);
- ``false``: none;
- ``"auto"`` (default): on for an SFT stage whose starting model does not know the chat tokens, by this
  rule, first match wins:

  1. the tokenizer has no ``<|im_start|>`` or ``<|im_end|>`` token: off (there is no row to train;
     the data code then has no ChatML either);
  2. the tokenizer has no chat template: on (a base model's tokenizer);
  3. the folder is a conversion of a Qwen v1 checkpoint whose ``chat_format`` is ``"raw"`` (Qwen-7B,
     not Qwen-7B-Chat; ``qwen_recipes.convert`` records it): on;
  4. a chat token's row, in the input embedding or the output layer, has a norm below
     ``UNTRAINED_SHARE`` of the median row norm of that layer (a row training never reached: weight
     decay shrinks it, or it was left at zero): on;
  5. else off: the rows look like the other, trained, rows.

  Pre-training stages: ``auto`` is off (documents carry no chat tokens).

The decision and its reason are printed in the log.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
UNTRAINED_SHARE = 0.25


@dataclass(frozen=True)
class TokenRows:
    tokens: tuple[str, ...]
    ids: tuple[int, ...]
    why: str

    def describe(self) -> str:
        if not self.ids:
            return f"train_tokens: none ({self.why})"
        names = ", ".join(f"{t} ({i})" for t, i in zip(self.tokens, self.ids))
        return f"train_tokens: the embedding and output rows of {names} train ({self.why})"


def token_id(tokenizer, token: str) -> int | None:
    """The id of ``token`` when the tokenizer has it as one token, else None."""
    ids = tokenizer.convert_tokens_to_ids([token])
    unknown = getattr(tokenizer, "unk_token_id", None)
    if not ids or ids[0] is None or (unknown is not None and ids[0] == unknown and token != tokenizer.unk_token):
        return None
    return int(ids[0])


def _row_share(weight, ids: list[int]) -> float:
    """The smallest norm among the rows ``ids``, as a share of the median row norm of ``weight``."""
    import torch

    with torch.no_grad():
        norms = weight.detach().float().norm(dim=1)
        median = norms.median().item()
        return min(norms[i].item() for i in ids) / median if median > 0 else 0.0


def _record(folder) -> dict:
    """The conversion record the model family leaves in a converted folder (Qwen v1 -> Qwen2), or {}."""
    from recipes.family import family

    name = family().conversion_record
    if name is None:
        return {}
    try:
        record = json.loads((Path(folder) / name).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return record if isinstance(record, dict) else {}


def source_chat_format(base_path: str) -> str | None:
    """v1's chat_format recorded by the conversion in the folder, if it is such a conversion."""
    return _record(base_path).get("chat_format")


def _sft_since(base_path: str) -> int:
    try:
        return int(_record(base_path).get("sft_stages_since", 0))
    except (TypeError, ValueError):
        return 0


def carry_source(base_path: str, merged: Path, kind: str) -> None:
    """A stage's merged model keeps the conversion record of its base (so that an SFT stage after a
    pre-training stage still knows it starts from a Qwen v1 base model), counting SFT stages since."""
    from recipes.family import family

    record = _record(base_path)
    if not record:
        return
    record["sft_stages_since"] = int(record.get("sft_stages_since", 0)) + (kind == "sft")
    (Path(merged) / family().conversion_record).write_text(json.dumps(record, indent=2))


def decide(setting, kind: str, model, tokenizer, base_path: str, chat: bool | None = None) -> TokenRows:
    """Which tokens' rows train in this stage, and why (see the module docstring)."""
    from recipes.errors import RecipeError

    if setting is False:
        return TokenRows((), (), "train_tokens = false")
    if setting != "auto":
        ids = []
        for token in setting:
            found = token_id(tokenizer, token)
            if found is None:
                raise RecipeError(f"train_tokens: {token!r} is not one token of the tokenizer ({base_path}); "
                                  "give token strings such as \"<|im_start|>\"")
            ids.append(found)
        return TokenRows(tuple(setting), tuple(ids), "as the recipe lists")
    from recipes.plugins.registry import chat_kind

    if not (chat if chat is not None else chat_kind(kind)):  # chat: the stage kind's own word
        return TokenRows((), (), "auto: a pre-training stage" if kind == "pretrain" else f"auto: a {kind} stage")
    ids = [token_id(tokenizer, t) for t in CHAT_TOKENS]
    if None in ids:
        return TokenRows((), (), "auto: the tokenizer has no ChatML tokens")
    chat = CHAT_TOKENS, tuple(ids)
    if not getattr(tokenizer, "chat_template", None):
        return TokenRows(*chat, "auto: the tokenizer has no chat template, so the model is a base model")
    if source_chat_format(base_path) == "raw" and not _sft_since(base_path):
        return TokenRows(*chat, "auto: converted from a Qwen v1 base model (chat_format \"raw\")")
    layers = [("input embedding", model.get_input_embeddings())]
    head = model.get_output_embeddings()
    if head is not None and head.weight is not model.get_input_embeddings().weight:
        layers.append(("output layer", head))
    shares = {name: _row_share(layer.weight, ids) for name, layer in layers}
    for name, share in shares.items():
        if share < UNTRAINED_SHARE:
            return TokenRows(*chat, f"auto: their {name} rows are untrained (norm {share:.2f} of the median row's, "
                             f"below {UNTRAINED_SHARE})")
    figures = ", ".join(f"{name} {share:.2f}" for name, share in shares.items())
    return TokenRows((), (), f"auto: the model knows ChatML (chat template; row norms of the median's: {figures})")


def lora_arguments(model, rows: TokenRows) -> dict:
    """LoraConfig's ``trainable_token_indices``: the rows in the input embedding and, when untied, the
    output layer (peft follows tied weights by itself)."""
    if not rows.ids:
        return {}
    embedding, head = model.get_input_embeddings(), model.get_output_embeddings()
    names = {module: name.rsplit(".", 1)[-1] for name, module in model.named_modules()}
    out = {names[embedding]: list(rows.ids)}
    if head is not None and head.weight is not embedding.weight:
        out[names[head]] = list(rows.ids)
    return {"trainable_token_indices": out}


def row_parameters(hidden: int, tied: bool, count: int) -> int:
    """Trainable parameters the rows add: one vector of ``hidden`` per token and layer."""
    return count * hidden * (1 if tied else 2)


def head_rows(head):
    """For the chunked loss: (frozen weight, bias, (index, rows) or None) of an output layer that peft
    may have wrapped for trainable tokens; ``rows`` replace those of ``weight`` at ``index``."""
    adapter = getattr(head, "token_adapter", None)
    if adapter is None:
        return head.weight, getattr(head, "bias", None), None
    import torch

    base = adapter.get_base_layer()
    active = [a for a in adapter.active_adapters if a in adapter.trainable_tokens_delta]
    if adapter.merged or getattr(adapter, "disable_adapters", False) or not active:
        return base.weight, getattr(base, "bias", None), None
    if len(active) > 1:  # several token adapters at once: peft's own merged weight (correct, costlier)
        return head.weight, getattr(base, "bias", None), None
    index = torch.tensor(adapter.token_indices[active[0]], device=base.weight.device)
    return base.weight, getattr(base, "bias", None), (index, adapter.trainable_tokens_delta[active[0]])


def lean_forward(model) -> int:
    """Make peft's trainable-token layers in ``model`` compute without a copy of the whole weight (and
    save when another adapter beside them has no rows).

    peft's ``TrainableTokensLayer`` builds ``weight.index_copy(rows)`` on every forward: for Qwen-7B's
    embedding a 1.2 GB copy, and the embedding's backward then makes a dense vocabulary x hidden
    gradient of it. Here the frozen weight computes as usual and only the trained rows are put in
    (the embedding's output where an input id is one of them; the output layer's logits at their
    columns), so the gradient is rows x hidden. Saving, loading and merging stay peft's. Returns the
    number of layers changed."""
    import types

    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    from peft.utils.other import TrainableTokensWrapper

    count = 0
    for module in model.modules():
        if isinstance(module, TrainableTokensLayer):  # a tied layer shares its rows: the same path
            module.forward_adapters = types.MethodType(_lean_forward_adapters, module)
            count += 1
        elif isinstance(module, TrainableTokensWrapper):
            # chaining "stack": the frozen earlier adapter has no rows, and peft 0.21 fails saving a
            # checkpoint of all adapters (KeyError 'token_adapter.trainable_tokens_delta.frozen0')
            for method in ("adapter_state_dict", "adapter_state_dict_load_map"):
                setattr(module, method, types.MethodType(_rows_of_own_adapters(getattr(type(module), method)), module))
    return count


def _rows_of_own_adapters(method):
    def wrapped(self, adapter_name, *args):
        if adapter_name not in self.token_adapter.trainable_tokens_delta:
            return {}
        return method(self, adapter_name, *args)

    return wrapped


def _lean_forward_adapters(self, x, active_adapters, *args, **kwargs):
    import torch
    import torch.nn.functional as F
    from peft.tuners.trainable_tokens.layer import TrainableTokensLayer

    active = list(active_adapters or [])
    if (self.disable_adapters or self.merged or len(active) != 1 or active[0] not in self.trainable_tokens_delta):
        return TrainableTokensLayer.forward_adapters(self, x, active_adapters, *args, **kwargs)
    base, name = self.base_layer, active[0]
    rows = self.trainable_tokens_delta[name]
    index = torch.tensor(self.token_indices[name], device=base.weight.device)
    if isinstance(base, torch.nn.Embedding):
        out = F.embedding(x, base.weight, base.padding_idx, base.max_norm, base.norm_type, base.scale_grad_by_freq,
                          base.sparse)
        lookup = torch.full((base.num_embeddings,), -1, dtype=torch.long, device=x.device)
        lookup[index] = torch.arange(len(index), device=x.device)
        where = lookup[x]
        picked = F.embedding(where.clamp(min=0), rows.to(out.dtype))
        out = torch.where((where >= 0).unsqueeze(-1), picked, out)
        scale = self._get_embed_scale()
        return out * scale.to(out.dtype) if scale is not None else out
    if isinstance(base, torch.nn.Linear):  # as peft's: the output layer without its bias
        out = F.linear(x, base.weight)
        return out.index_copy(-1, index, F.linear(x, rows.to(out.dtype)))
    return TrainableTokensLayer.forward_adapters(self, x, active_adapters, *args, **kwargs)
