"""The recipe's run-wide tables beside its stages: ``[distributed]`` (how several processes share the
work) and ``[[benchmarks]]`` (multiple-choice benchmarks scored before and after every stage). No torch."""

from __future__ import annotations

import re
from typing import Any, Literal, Optional

from pydantic import Field, field_validator

from recipes.config.strict import Strict

# transformers 5 trains FSDP as FSDP2 (torch's fully_shard): each fsdp_sharding we accept is one of its
# reshard_after_forward settings. FSDP1's hybrid_shard has no counterpart there (transformers raises;
# `recipes validate` refuses it first), and FSDP1's use_orig_params does not exist in FSDP2 (which
# always trains the original parameters), so neither is passed.
FSDP2_RESHARD_AFTER_FORWARD = {"full_shard": True, "shard_grad_op": False}


class Distributed(Strict):
    """How several processes (`recipes run --nproc N`, torchrun, accelerate launch) share the work.
    The Trainer's own FSDP and DeepSpeed integrations do it; recipes writes none of its own."""

    strategy: Literal["ddp", "fsdp", "deepspeed"] = Field(
        "ddp", description="ddp: every process holds the whole model; fsdp: parameters, gradients and "
        "optimizer state sharded (FSDP); deepspeed: ZeRO stage 2 or 3.")
    fsdp_sharding: Optional[Literal["full_shard", "hybrid_shard", "shard_grad_op"]] = Field(
        None, description="fsdp (FSDP2): what is sharded (default full_shard: parameters, gradients and optimizer "
        "state; shard_grad_op: gradients and optimizer state). hybrid_shard is FSDP1's and is refused.")
    zero_stage: Optional[Literal[2, 3]] = Field(None, description="deepspeed: ZeRO stage (default 2).")
    cpu_offload: bool = Field(False, description="fsdp: parameters to CPU; deepspeed: optimizer state to CPU.")
    timeout_minutes: int = Field(120, gt=0, description="How long a process waits for the others at a barrier "
                                 "(rank 0 tokenizes and merges alone meanwhile); NCCL's default is 10 minutes.")


class Benchmark(Strict):
    """A multiple-choice benchmark scored on the starting model and after every stage: files read as the
    benchmark ships them (C-Eval, CMMLU, MMLU folders, or records), no download (docs/benchmarks.md)."""

    name: str = Field(description="Names the benchmark in the run log, stage.json and the report.")
    path: str = Field(description="The benchmark's folder as it ships (C-Eval, CMMLU, MMLU), or a records file or "
                      "folder (jsonl/json/parquet); relative to the recipe file; `bundled:NAME` names a sample "
                      "shipped with qwen_recipes.")
    layout: Literal["auto", "ceval", "cmmlu", "mmlu", "records"] = Field(
        "auto", description="How the files are laid out; auto: told from the folder.")
    shots: int = Field(5, ge=0, le=25, description="Worked examples from the subject's dev split before each "
                       "question (few-shot).")
    split: Optional[str] = Field(None, description="The split scored: default val for C-Eval (its test answers are "
                                 "not public), test for CMMLU, MMLU and records.")
    max_per_subject: Optional[int] = Field(None, gt=0, description="Score at most N questions per subject: a fixed "
                                           "subset chosen with the recipe's seed, stored in the run folder, so "
                                           "every row scores the same items.")
    subjects: Optional[list[str]] = Field(None, min_length=1, description="Only these subjects (default: all).")
    chat: bool = Field(False, description="Also score each question through the tokenizer's chat template, as "
                       "its own entry NAME/chat (the plain completion prompt is always scored).")
    language: Literal["auto", "en", "zh"] = Field(
        "auto", description="The prompt's language; auto: Chinese for C-Eval and CMMLU, English otherwise.")
    batch_size: int = Field(8, gt=0, description="Questions per forward pass.")
    scorer: str = Field("builtin", description="Who scores it: builtin (letter logits after a completion prompt), "
                        "or a scorer plugin's name, e.g. lm-eval (plugins/recipes-lm-eval).")
    options: dict[str, Any] = Field(default_factory=dict, description="The scorer plugin's own options.")

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9_.-]*", value):
            raise ValueError("use letters, digits, '_', '-' or '.', starting with a letter or digit")
        return value
