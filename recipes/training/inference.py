"""Generating with a published model folder, for `recipes chat` and the run's samples.

The device is the GPU when there is one; the dtype is the precision the stage trained in (on CPU:
fp32, as training there used). A stage's answers go through the chat template when the stage is an
SFT stage and its tokenizer has one ("chat"); otherwise the prompt is continued as plain text
("text"). Generation stops at <|im_end|> and <|endoftext|> (and the tokenizer's own eos).
torch and transformers are imported by the functions that need them, never at import time.
"""

from __future__ import annotations

from dataclasses import dataclass

CHAT, TEXT = "chat", "text"
PRECISIONS = ("bf16", "fp16", "fp32")


@dataclass
class Generator:
    """A model folder loaded for generation."""

    model: object
    tokenizer: object
    device: str
    precision: str
    stop_ids: list[int]

    def mode(self, kind: str) -> str:
        """How a stage of ``kind`` is prompted: "chat" (SFT, with a chat template) or "text"."""
        from recipes.plugins.registry import chat_kind

        return CHAT if chat_kind(kind) and getattr(self.tokenizer, "chat_template", None) else TEXT


def device_and_precision(trained: str | None) -> tuple[str, str, str | None]:
    """(device, precision, a note when the precision differs from the stage's). GPU: the stage's
    precision (fp16 where bf16 is unsupported); CPU: fp32."""
    import torch

    if torch.cuda.is_available():
        precision = trained if trained in PRECISIONS else "bf16"
        if precision == "bf16":
            from recipes.training.precision import auto_precision, gpu_capability

            capability, name = gpu_capability()
            if auto_precision(capability, name)[0] != "bf16":  # emulated bf16 is slow: fp16 instead
                return "cuda", "fp16", f"the stage trained in bf16; {name} has none: fp16"
        return "cuda", precision, None
    note = f"the stage trained in {trained} on a GPU; on this CPU: fp32" if trained in ("bf16", "fp16") else None
    return "cpu", "fp32", note


def stop_token_ids(tokenizer) -> list[int]:
    """The family's turn end (Qwen: <|im_end|>), its end-of-text and the tokenizer's eos: those in its
    vocabulary."""
    from recipes.family import family

    vocab = tokenizer.get_vocab()
    ids = [vocab[t] for t in (family().turn_end, family().end_of_text) if t in vocab]
    if tokenizer.eos_token_id is not None and tokenizer.eos_token_id not in ids:
        ids.append(tokenizer.eos_token_id)
    return ids


def load_generator(folder, trained_precision: str | None = None, trust_remote_code: bool = False,
                   say=None) -> Generator:
    """The model and tokenizer of ``folder`` on the GPU (or CPU), in eval mode."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    device, precision, note = device_and_precision(trained_precision)
    if note and say is not None:
        say(note)
    dtype = {"bf16": torch.bfloat16, "fp16": torch.float16, "fp32": torch.float32}[precision]
    tokenizer = AutoTokenizer.from_pretrained(str(folder), trust_remote_code=trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(str(folder), dtype=dtype, trust_remote_code=trust_remote_code)
    model.to(device).eval()
    return Generator(model, tokenizer, device, precision, stop_token_ids(tokenizer))


def render(generator: Generator, mode: str, messages: list[dict] | None = None, text: str = "") -> str:
    """The exact text the model sees: the conversation through the chat template with the assistant's
    turn opened ("chat"), or ``text`` as it is ("text")."""
    if mode == CHAT:
        return generator.tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    return text


def generate(generator: Generator, prompt: str, max_new_tokens: int, temperature: float = 0.0,
             top_p: float = 1.0, streamer=None) -> dict:
    """Continue ``prompt`` (already rendered): greedy at temperature 0, else sampled. Returns
    {"answer", "prompt_tokens", "new_tokens", "stopped": "stop token" | "max_new_tokens", "ids": the new token ids
    without the stop token}."""
    import torch
    from transformers import GenerationConfig

    tokenizer = generator.tokenizer
    inputs = tokenizer(prompt, return_tensors="pt", add_special_tokens=False).to(generator.device)
    sampled = temperature > 0
    pad = tokenizer.pad_token_id if tokenizer.pad_token_id is not None else (generator.stop_ids or [0])[-1]
    config = GenerationConfig(max_new_tokens=max_new_tokens, do_sample=sampled, eos_token_id=generator.stop_ids,
                              pad_token_id=pad, **(dict(temperature=temperature, top_p=top_p) if sampled else {}))
    with torch.inference_mode():
        output = generator.model.generate(**inputs, generation_config=config, streamer=streamer)
    new = output[0, inputs["input_ids"].shape[1]:].tolist()
    stopped = bool(new) and new[-1] in generator.stop_ids
    if stopped:
        new = new[:-1]
    return {"answer": tokenizer.decode(new, skip_special_tokens=True), "prompt_tokens": inputs["input_ids"].shape[1],
            "new_tokens": len(new), "stopped": "stop token" if stopped else "max_new_tokens", "ids": new}
