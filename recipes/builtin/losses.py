"""Built-in loss functions: ``chunked`` (the default: the output layer and cross-entropy in chunks,
only where a label is; see recipes.training.chunked_loss) and ``standard`` (transformers' own: full logits,
kept for comparison and for models the chunked path refuses).

Light on purpose: plugins load when a recipe is validated, so torch is imported only in ``build``.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field

from recipes.api import LossFunction, NoOptions, hookimpl

# 512 positions x 151,936 fp32 logits = 0.3 GB alive at a time. On this 2-core CPU (hidden 256) 512
# and 1024 ran at the same speed within the noise, and 1024 raised the SFT peak RSS by 0.3 GB
DEFAULT_CHUNK_SIZE = 512


class ChunkedOptions(BaseModel):
    model_config = ConfigDict(extra="forbid")

    chunk_size: int = Field(DEFAULT_CHUNK_SIZE, ge=1, description=(
        "Positions per chunk: memory for logits is chunk_size x vocabulary x 4 bytes (0.3 GB for Qwen at 512)."))
    eaft: bool = Field(False, description=(
        "Entropy-adaptive fine-tuning (arXiv 2601.02151): weight each labelled token's cross-entropy by the "
        "normalised entropy of its top-k logits, damping confident conflicts (less forgetting). Training only; "
        "evaluation stays plain cross-entropy."))
    eaft_alpha: float = Field(1.0, gt=0, description="EAFT: the weight is the normalised entropy to this power.")
    eaft_top_k: int = Field(20, ge=2, description="EAFT: how many of the largest logits the entropy is taken over.")


def build_chunked(model, options: ChunkedOptions):
    from functools import partial

    from recipes.training.chunked_loss import chunked_lm_loss, output_layer

    output_layer(model)  # refuse a head it cannot reproduce before training starts
    eaft = (options.eaft_alpha, options.eaft_top_k) if options.eaft else None
    return partial(chunked_lm_loss, chunk_size=options.chunk_size, eaft=eaft)


def chunked_positions(options: ChunkedOptions, tokens: int) -> int:
    return min(tokens, options.chunk_size)


def build_standard(model, options):
    return standard_lm_loss


def standard_lm_loss(model, inputs: dict, num_items_in_batch=None):
    """The model's own loss (transformers: full logits, then cross-entropy), as the Trainer calls it."""
    extra = {"num_items_in_batch": num_items_in_batch} if num_items_in_batch is not None else {}
    return model(**inputs, **extra).loss


@hookimpl
def register_loss_functions():
    return [
        LossFunction("chunked", build_chunked, ChunkedOptions, logit_positions=chunked_positions, description=(
            "The output layer and cross-entropy in chunks of positions, only where a label is: never the full "
            "logits (default; equals standard within float rounding).")),
        LossFunction("standard", build_standard, NoOptions, description=(
            "transformers' own loss: the full logits of every position, then cross-entropy.")),
    ]
