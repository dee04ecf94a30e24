"""The model a stage trains: loaded through the quantization backend, LoRA attached as the stage's
chaining says, merged and saved when it is done."""

from __future__ import annotations

import json
from pathlib import Path

from recipes.data.tokenization import special_id
from recipes.errors import RecipeError


def process_device_map(device: str) -> dict:
    """The device map that puts a whole model on this process's own device: ``cuda:LOCAL_RANK`` (after
    ``distributed.init`` set it current) on a GPU, never ``cuda:0`` on every rank; the host on CPU."""
    if device != "cuda":
        return {"": "cpu"}
    import torch

    return {"": torch.cuda.current_device()}


def loads_to_device(quantizes: bool, device: str, sharded: bool = False) -> bool:
    """Whether the base model loads straight onto this process's device (a device map): always for
    quantized weights (bitsandbytes quantizes as it loads), and for any model on a GPU, so that each
    rank of N does not first hold a whole 7B model (15 GB) in host memory. Not when FSDP or ZeRO-3 shard
    the weights: they take the model from the host and place only each rank's shard on its GPU."""
    return quantizes or (device == "cuda" and not sharded)


def load_model(base_path: str, backend, backend_options, dtype, load_kwargs: dict, device: str,
               gradient_checkpointing: bool, attn_implementation: str | None = None, sharded: bool = False):
    """The base model through the quantization backend (``QuantizationBackend.model_kwargs`` and
    ``prepare``), ready for LoRA, on this process's own device where ``loads_to_device`` says so
    (``sharded``: FSDP or ZeRO-3 shard the weights)."""
    from transformers import AutoModelForCausalLM

    backend_kwargs = backend.model_kwargs(backend_options, dtype)
    if loads_to_device(backend.quantizes, device, sharded):
        backend_kwargs.setdefault("device_map", process_device_map(device))
    if attn_implementation is not None:
        backend_kwargs.setdefault("attn_implementation", attn_implementation)
    model = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, **load_kwargs, **backend_kwargs)
    model = backend.prepare(model, backend_options, gradient_checkpointing)
    model.config.use_cache = False
    return model


def lora_config(settings, extra: dict | None = None):
    """peft's LoraConfig from a stage's settings (``extra``: more LoraConfig arguments, e.g. the
    trainable token rows of recipes.training.token_rows)."""
    from peft import LoraConfig

    targets = "all-linear" if settings.lora_target == "all" else list(settings.lora_target)
    init = True if settings.init_lora_weights == "default" else settings.init_lora_weights
    return LoraConfig(r=settings.lora_rank, lora_alpha=settings.lora_alpha, lora_dropout=settings.lora_dropout,
                      target_modules=targets, task_type="CAUSAL_LM", use_rslora=settings.use_rslora,
                      use_dora=settings.use_dora, init_lora_weights=init, **(extra or {}))


def changes_base(settings) -> bool:
    """Whether the LoRA initialisation rewrites the base weights (PiSSA and OLoRA move the top singular
    directions, or a QR factor, out of W into A and B): such an adapter fits only the rewritten base,
    so it is published converted into a plain LoRA of the original base (``save_adapter``)."""
    return settings.init_lora_weights.startswith("pissa") or settings.init_lora_weights == "olora"


def save_initial_adapter(model, folder: Path) -> None:
    """The adapter as initialised, before any step: what peft's conversion subtracts at publishing.
    Kept across a resume (the same seed gives the same initialisation, but the first copy is the one
    the checkpoints started from)."""
    if (folder / "adapter_config.json").exists():
        return
    config = model.peft_config["default"]
    init = config.init_lora_weights
    config.init_lora_weights = True  # loading it must not run the SVD again on the rewritten base
    try:
        model.save_pretrained(str(folder), selected_adapters=["default"])
    finally:
        config.init_lora_weights = init


def attach_adapters(model, lora, adapters: list[Path], chaining: str, stage, say):
    """LoRA on the model, as the stage's chaining says. Returns (peft model, the frozen adapters' folders).

    The trained adapter is always named "default" (so that it saves at the top of its folder); earlier
    adapters kept frozen are "frozen0", "frozen1", ... and stay active in the forward pass."""
    from peft import PeftModel, get_peft_model

    if not adapters:
        if stage.base != "model":
            say(f"chaining merge: {stage.base}'s adapter is merged into its base; a new adapter trains on it")
        try:
            return get_peft_model(model, lora), []
        except ValueError as exc:
            raise RecipeError(f"stage {stage.name!r}: lora_target: {exc}") from exc
    trained = adapters[-1] if chaining == "continue" else None
    frozen = adapters[:-1] if chaining == "continue" else adapters
    names = [f"frozen{i}" for i in range(len(frozen))]
    for i, (name, folder) in enumerate(zip(names, frozen)):
        if i == 0:
            model = PeftModel.from_pretrained(model, str(folder), adapter_name=name, is_trainable=False)
        else:
            model.load_adapter(str(folder), adapter_name=name, is_trainable=False)
    if trained is not None:
        if frozen:
            model.load_adapter(str(trained), adapter_name="default", is_trainable=True)
        else:
            model = PeftModel.from_pretrained(model, str(trained), adapter_name="default", is_trainable=True)
        say(f"chaining continue: keeps training {stage.base}'s adapter ({trained}); its LoRA settings apply, "
            "not this stage's")
    else:
        model.add_adapter("default", lora)
        say(f"chaining stack: a new adapter trains on top of {stage.base}'s adapter, which stays frozen")
    model.base_model.set_adapter([*names, "default"])
    for name, parameter in model.named_parameters():
        parameter.requires_grad = (".default." in name and "lora_" in name) or name.endswith("tokens_delta.default")
    return model, list(frozen)


def merged_model(model, backend, base_path: str, dtype, load_kwargs: dict, adapter_dirs: list[Path],
                 device: str = "cpu"):
    """The base with every adapter of the chain merged in. Never merged into quantized weights: for a
    quantizing backend the base is reloaded unquantized in the stage's dtype, and the adapters are
    merged there one by one; on a GPU the reload goes onto this process's GPU (a device map, not
    ~15 GB of host memory for a 7B model) beside the 4-bit training model, after the cache is emptied.
    Not run on a GPU yet: a card without room for both would need the 4-bit model freed first."""
    if not backend.quantizes:
        return model.merge_and_unload()
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    if device == "cuda":
        import gc

        import torch

        gc.collect()
        torch.cuda.empty_cache()
    merged = AutoModelForCausalLM.from_pretrained(base_path, dtype=dtype, device_map=process_device_map(device),
                                                  **load_kwargs)
    for adapter in adapter_dirs:
        merged = PeftModel.from_pretrained(merged, str(adapter)).merge_and_unload()
    return merged


def point_adapter_at(folder: Path, base: Path) -> None:
    """Set the adapter's base_model_name_or_path (what PeftModel.from_pretrained loads it on)."""
    config_path = folder / "adapter_config.json"
    config = json.loads(config_path.read_text())
    config["base_model_name_or_path"] = str(base)
    config_path.write_text(json.dumps(config, indent=2))


def pad_id(tokenizer) -> int:
    """The padding id: the tokenizer's, else the family's end-of-text, else eos, else 0."""
    from recipes.family import family

    if tokenizer.pad_token_id is not None:
        return tokenizer.pad_token_id
    return special_id(tokenizer, family().end_of_text) or tokenizer.eos_token_id or 0


def end_turns(model, tokenizer) -> None:
    """After SFT an answer ends with the family's turn end (Qwen: ``<|im_end|>``): make it the eos of
    the tokenizer and the model's config, and let generation stop there and at end-of-text, as the
    family's chat models do. A vocabulary without it is left as trained. ``model`` may be None (an
    adapter export: the tokenizer alone)."""
    from recipes.family import family

    turn_end, end_of_text = family().turn_end, family().end_of_text
    turn_id, text_id = special_id(tokenizer, turn_end), special_id(tokenizer, end_of_text)
    if turn_id is None:
        return
    tokenizer.eos_token = turn_end
    if tokenizer.pad_token is None and text_id is not None:
        tokenizer.pad_token = end_of_text
    if model is not None:
        model.config.eos_token_id = turn_id
        if model.generation_config is not None:
            model.generation_config.eos_token_id = [i for i in (turn_id, text_id) if i is not None]
            model.generation_config.pad_token_id = text_id if text_id is not None else turn_id


def save_adapter(model, tokenizer, folder: Path, initial: Path | None = None) -> None:
    """The trained adapter in PEFT format; with ``initial`` (a PiSSA or OLoRA adapter as initialised)
    converted by peft into a plain LoRA of twice the rank on the original base weights."""
    extra = {"path_initial_model_for_weight_conversion": str(initial)} if initial is not None else {}
    model.save_pretrained(str(folder), selected_adapters=["default"], **extra)
    tokenizer.save_pretrained(str(folder))


def save_merged(model, tokenizer, folder: Path) -> None:
    model.config.use_cache = True
    model.save_pretrained(str(folder), max_shard_size="5GB")
    tokenizer.save_pretrained(str(folder))
