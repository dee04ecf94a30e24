"""A finished stage is torn down before the next one starts: its model, optimizer and trainer are
gone without waiting for Python's cyclic collector (which is disabled here), so on a GPU the next
stage's memory and reported peak are its own."""

from __future__ import annotations

import gc
import json
import textwrap
import weakref

from rich.console import Console

from conftest import write
from recipes.config.load import load_recipe
from recipes.planning.plan import make_plan
from recipes.plugins.registry import get_registry
from recipes.run.runner import run_plan
from recipes.training import memory_peak
from recipes.training.stage import StageRun

RECIPE = textwrap.dedent("""
    [model]
    path = "bundled:tiny-qwen2"
    [defaults]
    max_steps = 1
    logging_steps = 1
    save_steps = 1
    per_device_train_batch_size = 2
    gradient_accumulation_steps = 1
    cutoff_len = 48
    precision = "bf16"           # accelerate's mixed-precision wrapper on the model, as on a GPU
    val_size = 0.2
    [[stages]]
    name = "domain"
    kind = "pretrain"
    [[stages.data]]
    path = "bundled:domain_corpus.jsonl"
    format = "text"
    [[stages]]
    name = "second"
    kind = "pretrain"
    base = "domain"
    [[stages.data]]
    path = "bundled:domain_corpus.jsonl"
    format = "text"
""")


def test_stage_one_is_unreachable_before_stage_two_starts_without_the_cyclic_collector(tmp_path, monkeypatch,
                                                                                       tiny_model):
    refs: dict = {}  # stage name -> weak references to what it held
    seen: dict = {}  # what was alive at each moment
    train, prepare = StageRun.train, StageRun.prepare_data

    def recording_train(self):
        train(self)
        trainer = self.trainer
        refs[self.stage.name] = {"trainer": weakref.ref(trainer), "model": weakref.ref(trainer.model),
                                 "optimizer": weakref.ref(trainer.optimizer),
                                 "accelerate_forward": "forward" in trainer.model.__dict__}

    def alive(name: str) -> dict:
        return {what: ref() is not None for what, ref in refs[name].items() if isinstance(ref, weakref.ref)}

    def recording_prepare(self):
        if self.stage.name == "second":
            seen["at stage 2 start"] = alive("domain")
        prepare(self)

    release = memory_peak.release_memory

    def recording_release(device):  # before the runner's own gc.collect(): reference counting alone
        seen.setdefault("before collecting", alive(next(iter(refs))))
        release(device)

    monkeypatch.setattr(StageRun, "train", recording_train)
    monkeypatch.setattr(StageRun, "prepare_data", recording_prepare)
    monkeypatch.setattr(memory_peak, "release_memory", recording_release)
    registry = get_registry()
    plan = make_plan(load_recipe(str(write(tmp_path / "r.toml", RECIPE)), registry), registry, str(tmp_path / "run"))
    gc.collect()
    gc.disable()
    try:
        run_plan(plan, Console(file=open(tmp_path / "out.txt", "w")), registry)
    finally:
        gc.enable()
    assert refs["domain"]["accelerate_forward"]  # the cycle the teardown has to break was there
    dead = {"trainer": False, "model": False, "optimizer": False}
    assert seen == {"before collecting": dead, "at stage 2 start": dead}
    assert alive("second") == dead  # the last stage too, before the samples
    # LoRA publishes the model it trained: no merged evaluation (tests/test_qlora_merged_eval.py has QLoRA's)
    result = json.loads((tmp_path / "run" / "stages" / "domain" / "stage.json").read_text())
    assert result["eval_loss_after"] is not None and result["eval_loss_merged"] is None
