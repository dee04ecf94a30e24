"""The built-in stage kinds: continued pre-training and SFT, the two language-modelling kinds that
train on the host's token store with the stage's loss."""

from __future__ import annotations

from recipes.config.schema import KIND_DEFAULTS, SEED_PLAN
from recipes.plugins.hookspecs import StageKind, hookimpl


def _over_seed_plan(kind: str) -> dict:
    return {key: value for key, value in KIND_DEFAULTS[kind].items() if SEED_PLAN[key] != value}


@hookimpl
def register_stage_kinds():
    return [
        StageKind("pretrain", "documents", _over_seed_plan("pretrain"),
                  description="continued pre-training: documents joined and cut into cutoff_len blocks, every "
                  "token learned"),
        StageKind("sft", "conversations", _over_seed_plan("sft"), chat=True,
                  description="supervised fine-tuning: conversations rendered with the chat template, the "
                  "answers learned"),
    ]
