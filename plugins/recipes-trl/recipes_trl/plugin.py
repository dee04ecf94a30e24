"""The recipes-trl plugin: the dpo and kto stage kinds and the preference data formats.

Light on purpose (``recipes validate`` loads it): TRL, datasets and torch are imported only when a
stage prepares its data or trains.
"""

from __future__ import annotations

from recipes.api import StageKind, hookimpl

from recipes_trl.dpo import DPOOptions
from recipes_trl.formats import FORMATS
from recipes_trl.kto import KTOOptions

REQUIRES_RECIPES_API = 1

# a preference stage's seed settings over the seed plan: TRL's and LLaMA-Factory's DPO examples train a
# LoRA at lr 5e-6 (full) to 5e-5 (LoRA) for one epoch; sequences hold a prompt and one answer
PREFERENCE_DEFAULTS = {"lora_dropout": 0.0, "cutoff_len": 1024, "learning_rate": 5e-6, "gradient_accumulation_steps": 4,
                       "num_train_epochs": 1.0, "train_tokens": False, "val_size": 0.1}


def check(settings, options) -> list[tuple[str, str]]:
    problems = []
    if settings.chaining == "stack":
        problems.append(("chaining", "a preference stage cannot stack a new adapter on a frozen one (its reference "
                         "would need the frozen one alone): use \"merge\" (a new adapter on the merged model, the "
                         "reference the model without it) or \"continue\" (against a frozen copy of the adapter)"))
    if settings.packing:
        problems.append(("packing", "a preference stage compares whole answers, one per sequence: remove packing"))
    if settings.train_tokens is not False:
        problems.append(("train_tokens", "a preference stage trains no token rows (TRL's KTO head and the "
                         "reference cannot see them): set train_tokens = false; train the chat tokens in the SFT "
                         "stage before it"))
    if settings.loss != "chunked":
        problems.append(("loss", "a preference stage computes its log-probabilities through the chunked path: "
                         "remove loss (or set it to \"chunked\")"))
    return problems


def prepare_pairs(context):
    from recipes_trl.data import prepare, tokenize_pairs

    return prepare(context, tokenize_pairs, "pairs")


def prepare_unpaired(context):
    from recipes_trl.data import prepare, tokenize_unpaired

    data = prepare(context, tokenize_unpaired, "answers")
    data.lines.append(f"{data.stats['desirable']} desirable, {data.stats['undesirable']} undesirable")
    return data


def build_dpo(context, data):
    from recipes_trl.dpo import build_dpo as build

    return build(context, data)


def build_kto(context, data):
    from recipes_trl.kto import build_kto as build

    return build(context, data)


def inspect_pairs(context, count: int) -> dict:
    data = prepare_pairs(context)
    examples = [{"chosen": _side(e["prompt_ids"], e["chosen_ids"]), "rejected": _side(e["prompt_ids"], e["rejected_ids"])}
                for e in data.train[:count]]
    return {"counts": _counts(data), "examples": examples}


def inspect_unpaired(context, count: int) -> dict:
    data = prepare_unpaired(context)
    examples = [{("desirable" if e["label"] else "undesirable"): _side(e["prompt_ids"], e["completion_ids"])}
                for e in data.train[:count]]
    return {"counts": _counts(data), "examples": examples}


def _side(prompt: list[int], answer: list[int]) -> dict:
    from recipes.api import IGNORE_INDEX

    return {"input_ids": prompt + answer, "labels": [IGNORE_INDEX] * len(prompt) + answer}


def _counts(data) -> dict:
    return {key: value for key, value in data.stats.items() if isinstance(value, int)}


@hookimpl
def register_stage_kinds():
    return [
        StageKind("dpo", "preferences", PREFERENCE_DEFAULTS, DPOOptions, chat=True, follows=("sft", "dpo", "kto"),
                  sequences_per_example=2, check=check, prepare=prepare_pairs, build=build_dpo, inspect=inspect_pairs,
                  description="direct preference optimisation after SFT (TRL's DPOTrainer): chosen over rejected "
                  "answers, against the starting model as the reference"),
        StageKind("kto", "unpaired_preferences", PREFERENCE_DEFAULTS, KTOOptions, chat=True,
                  follows=("sft", "dpo", "kto"), sequences_per_example=2, check=check, prepare=prepare_unpaired,
                  build=build_kto, inspect=inspect_unpaired,
                  description="Kahneman-Tversky optimisation after SFT (TRL's KTOTrainer): answers marked "
                  "desirable or undesirable"),
    ]


@hookimpl
def register_data_formats():
    return list(FORMATS)
