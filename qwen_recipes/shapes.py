"""A Qwen model's parameter shapes, from its config.json alone: no torch, no weights, no model code.

`recipes plan` counts parameters and LoRA parameters from these shapes, so that it works for models
whose code is not at hand (Qwen-7B v1 runs on its own code, fetched with the weights).

How the counts were checked:

- qwen2 (Qwen2/Qwen2.5, native in transformers): ``tests/test_plan.py`` builds the model from the
  same config on the meta device (``AutoModelForCausalLM.from_config``), adds peft LoRA, and compares
  total and trainable counts exactly, for the shipped Qwen2.5-7B config (7,615,616,512 parameters)
  and the embedded tiny model.
- qwen (Qwen-7B v1, ``QWenLMHeadModel``): its modeling code (modeling_qwen.py, read from the
  published source) builds per block ``attn.c_attn`` = Linear(hidden, 3 * kv_channels * heads) with a
  bias, ``attn.c_proj`` = Linear(kv_channels * heads, hidden, bias=not no_bias), ``mlp.w1`` and
  ``mlp.w2`` = Linear(hidden, intermediate_size // 2, bias=not no_bias), ``mlp.c_proj`` =
  Linear(intermediate_size // 2, hidden, bias=not no_bias), RMSNorms ``ln_1`` and ``ln_2``; then
  ``wte``, ``ln_f`` and an untied ``lm_head``. For the shipped config this gives 7,721,324,544
  parameters, Qwen's published "7.7B". The test checks that figure, and that rank 64 on Qwen's own
  targets (c_attn, c_proj, w1, w2: peft matches ``c_proj`` in both attention and MLP) trains
  143,130,624 parameters, 1.820% of 7,864,455,168 (peft's "trainable%": LoRA included in the
  total), not the seed plan's claimed 3.4%.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Linear:
    """A linear layer of one decoder block: its path inside the block, sizes and bias."""

    path: str  # e.g. "self_attn.q_proj"
    fan_in: int
    fan_out: int
    bias: bool
    reads: str  # the activation it reads; layers that read the same one share it (q, k and v)

    @property
    def name(self) -> str:
        """The short name LoRA targets use (the last part of the path)."""
        return self.path.rsplit(".", 1)[-1]

    @property
    def parameters(self) -> int:
        return self.fan_in * self.fan_out + (self.fan_out if self.bias else 0)


@dataclass(frozen=True)
class Shape:
    """What the memory estimate and the parameter counts need to know about a model."""

    model_type: str
    hidden: int
    layers: int
    vocab: int
    tied: bool
    heads: int
    kv_width: int  # width of the key and value projections (kv heads x head dim)
    query_width: int  # width of the query projection (heads x head dim)
    mlp_width: int  # width of the MLP's inner layer
    linears: tuple[Linear, ...]  # one block's linear layers
    norms_per_block: int  # RMSNorm weight vectors of width `hidden` per block

    @property
    def block_parameters(self) -> int:
        return sum(linear.parameters for linear in self.linears) + self.norms_per_block * self.hidden

    @property
    def embedding_parameters(self) -> int:
        """Input embeddings plus the output head (counted once when tied)."""
        return self.vocab * self.hidden * (1 if self.tied else 2)

    @property
    def total_parameters(self) -> int:
        return self.layers * self.block_parameters + self.embedding_parameters + self.hidden  # + final norm

    @property
    def linear_parameters(self) -> int:
        """Parameters in the blocks' linear layers (what a 4- or 8-bit backend quantizes), biases out."""
        return self.layers * sum(linear.fan_in * linear.fan_out for linear in self.linears)

    def targeted(self, targets) -> list[Linear]:
        """The block linears LoRA wraps: "all" is every one (peft's all-linear: not the output head);
        else those whose short name is in ``targets`` (peft matches the last part of a module's path)."""
        if targets == "all":
            return list(self.linears)
        return [linear for linear in self.linears if linear.name in set(targets)]

    def lora_parameters(self, targets, rank: int) -> int:
        """LoRA's trainable parameters: r x (in + out) per wrapped layer, in every block."""
        return self.layers * sum(rank * (linear.fan_in + linear.fan_out) for linear in self.targeted(targets))


class UnknownArchitecture(ValueError):
    pass


def shape_of(config: dict) -> Shape:
    """The shape of a qwen2 or qwen (v1) model from its config.json. Raises UnknownArchitecture for
    other model types, and KeyError for a config that lacks a needed size."""
    kind = config.get("model_type")
    hidden, layers, heads = config["hidden_size"], config["num_hidden_layers"], config["num_attention_heads"]
    vocab = config["vocab_size"]
    if kind == "qwen2":
        head_dim = config.get("head_dim") or hidden // heads
        kv = config.get("num_key_value_heads") or heads
        width, kv_width, mlp = heads * head_dim, kv * head_dim, config["intermediate_size"]
        linears = (
            Linear("self_attn.q_proj", hidden, width, True, "attn_in"),
            Linear("self_attn.k_proj", hidden, kv_width, True, "attn_in"),
            Linear("self_attn.v_proj", hidden, kv_width, True, "attn_in"),
            Linear("self_attn.o_proj", width, hidden, False, "attn_out"),
            Linear("mlp.gate_proj", hidden, mlp, False, "mlp_in"),
            Linear("mlp.up_proj", hidden, mlp, False, "mlp_in"),
            Linear("mlp.down_proj", mlp, hidden, False, "mlp_act"),
        )
        tied = config.get("tie_word_embeddings", False)
    elif kind == "qwen":
        width = config.get("kv_channels", hidden // heads) * heads
        kv_width, mlp = width, config["intermediate_size"] // 2
        bias = not config.get("no_bias", True)
        linears = (
            Linear("attn.c_attn", hidden, 3 * width, True, "attn_in"),
            Linear("attn.c_proj", width, hidden, bias, "attn_out"),
            Linear("mlp.w1", hidden, mlp, bias, "mlp_in"),
            Linear("mlp.w2", hidden, mlp, bias, "mlp_in"),
            Linear("mlp.c_proj", mlp, hidden, bias, "mlp_act"),
        )
        tied = config.get("tie_word_embeddings", False)
    else:
        raise UnknownArchitecture(f"model_type {kind!r}: parameter shapes are known for qwen2 and qwen (v1)")
    return Shape(kind, hidden, layers, vocab, bool(tied), heads, kv_width, width, mlp, linears, 2)
