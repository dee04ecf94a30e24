"""Optimizer names: the copy in recipes.config.optimizers matches transformers', the check needs no torch,
and bitsandbytes' 8-bit and paged AdamW train on this CPU (paged ones unpaged, with a warning)."""

from __future__ import annotations

import subprocess
import sys
import warnings

import pytest
import torch

from recipes.config.optimizers import BITSANDBYTES, OPTIMIZER_NAMES, PACKAGE_OF, UNPAGED, check_optimizer, device_note


def test_the_names_are_transformers_own():
    from transformers.trainer_optimizer import _BITSANDBYTES_OPTIMIZERS
    from transformers.training_args import OptimizerNames

    assert OPTIMIZER_NAMES == tuple(o.value for o in OptimizerNames)
    assert set(BITSANDBYTES) == {o.value for o in _BITSANDBYTES_OPTIMIZERS}
    assert set(PACKAGE_OF) <= set(OPTIMIZER_NAMES) and set(UNPAGED.values()) <= set(OPTIMIZER_NAMES)
    assert set(UNPAGED) == {name for name in OPTIMIZER_NAMES if name.startswith("paged_")}


@pytest.mark.parametrize("name,message", [
    ("adamw_torch", None),
    ("paged_adamw_8bit", None),
    ("adamw_bnb_8bit", None),
    ("pagedadamw_8bit", "unknown optimizer 'pagedadamw_8bit' (not one of transformers' OptimizerNames); "
                        'did you mean "paged_adamw_8bit"?'),
    ("adamw_hf", 'did you mean "adamw_torch"?'),  # removed in transformers 5
    ("adamw", 'did you mean "adamw_torch"?'),
    ("galore_adamw", "optimizer 'galore_adamw' needs the galore_torch package, which is not installed: "
                     "pip install galore-torch"),
    ("adamw_torch_xla", "pip install torch_xla (TPU only)"),
])
def test_check_optimizer(name, message):
    found = check_optimizer(name)
    assert found == message if message is None else message in found


def test_the_check_imports_neither_torch_nor_transformers():
    code = ("import sys; from recipes.config.optimizers import check_optimizer; check_optimizer('paged_adamw_8bit'); "
            "check_optimizer('galore_adamw'); print([m for m in ('torch', 'transformers', 'bitsandbytes') "
            "if m in sys.modules])")
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True).stdout.strip() == "[]"


def test_paged_optimizers_are_a_warning_off_cuda():
    assert "runs it unpaged (as 'adamw_bnb_8bit' does)" in device_note("paged_adamw_8bit", "cpu")
    assert device_note("paged_adamw_8bit", "cuda") is None and device_note("adamw_torch", "cpu") is None


def _train(tiny_model, tmp_path, optim: str):
    """4 steps of the project's StageTrainer over LoRA r=64 (lora_A is 64 x 64 = 4096 elements:
    bitsandbytes' smallest tensor with 8-bit state) with the optimizer named as a recipe names it."""
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, TrainingArguments

    from recipes.training.trainer import StageTrainer

    torch.manual_seed(0)
    model = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32),
                           LoraConfig(r=64, target_modules=["q_proj"], task_type="CAUSAL_LM"))
    before = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    data = [{"input_ids": ids, "labels": ids} for ids in torch.randint(0, 1000, (8, 32), generator=torch.Generator().manual_seed(0))]
    args = TrainingArguments(output_dir=str(tmp_path / optim), max_steps=4, per_device_train_batch_size=4,
                             learning_rate=1e-2, optim=optim, use_cpu=True, report_to=[], save_strategy="no",
                             disable_tqdm=True, logging_steps=1, remove_unused_columns=False, seed=0)
    trainer = StageTrainer(model=model, args=args, train_dataset=data)
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        trainer.train()
    after = {n: p.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
    moved = max((after[n] - before[n]).abs().max().item() for n in after if "lora_A" in n)
    return trainer, [str(w.message) for w in caught], moved, after


@pytest.fixture(scope="module")
def trained(tiny_model, tmp_path_factory):
    folder = tmp_path_factory.mktemp("optimizers")
    # adamw_torch: the control, 32-bit state, which the comparison below must tell apart
    names = dict.fromkeys(("adamw_bnb_8bit", "paged_adamw_8bit", UNPAGED["paged_adamw_8bit"], "adamw_torch"))
    return {optim: _train(tiny_model, folder, optim) for optim in names}


@pytest.mark.parametrize("optim", ["adamw_bnb_8bit", "paged_adamw_8bit"])
def test_bitsandbytes_8bit_adamw_trains_on_cpu_with_8bit_state(trained, optim):
    import bitsandbytes as bnb

    trainer, caught, moved, _ = trained[optim]
    assert trainer.state.global_step == 4 and moved > 1e-3  # lora_A trained
    optimizer = getattr(trainer.optimizer, "optimizer", trainer.optimizer)
    assert isinstance(optimizer, bnb.optim.optimizer.Optimizer8bit)
    states = {tuple(p.shape): optimizer.state[p] for group in optimizer.param_groups for p in group["params"]}
    assert states[(64, 64)]["state1"].dtype == torch.uint8  # lora_A: 8-bit blockwise Adam state
    assert states[(64, 64)]["state2"].dtype == torch.uint8
    paged_warning = "Paged optimizers are not supported on CPU. Falling back to non-paged optimizer behavior."
    assert (paged_warning in caught) == optim.startswith("paged_")


def test_a_paged_optimizer_runs_loss_for_loss_like_the_unpaged_one_off_cuda(trained):
    """What device_note tells the user: off CUDA, a paged optimizer is its unpaged partner (UNPAGED)."""
    losses = {optim: [row["loss"] for row in trainer.state.log_history if "loss" in row]
              for optim, (trainer, _, _, _) in trained.items()}
    weights = {optim: result[3] for optim, result in trained.items()}
    unpaged = UNPAGED["paged_adamw_8bit"]
    assert len(losses[unpaged]) == 4  # (that it trains: lora_A moved, above)
    # the same kernel: the same losses and, bit for bit, the same weights after 4 steps
    assert losses["paged_adamw_8bit"] == losses[unpaged]
    assert all(torch.equal(weights["paged_adamw_8bit"][n], weights[unpaged][n]) for n in weights[unpaged])
    # control: 32-bit AdamW ends elsewhere (8-bit state rounds the moments), so equality says something
    assert not all(torch.equal(weights["adamw_torch"][n], weights["adamw_bnb_8bit"][n]) for n in weights["adamw_torch"])
