"""What CPU can check of the GPU paths (issue 18): how many processes `recipes run` starts, the
device a process loads onto, refused strategy/loss pairs, the non-finite guard under a real
torch.amp.GradScaler, the chunk loop under autocast, the fp16 prescaling, rank-0-only TensorBoard."""

from __future__ import annotations

import pytest

from recipes.training.distributed import processes_to_launch


def test_several_gpus_and_no_launcher_run_on_all_of_them_never_one_process_on_many():
    assert processes_to_launch(None, 4, {})[0] == 4
    assert "running on all of them" in processes_to_launch(None, 4, {})[1]
    assert processes_to_launch(None, 1, {}) == (1, None)
    assert processes_to_launch(None, 0, {}) == (1, None)  # CPU
    nproc, note = processes_to_launch(1, 8, {})
    assert nproc == 1 and "1 of the 8 visible GPUs" in note
    assert processes_to_launch(2, 8, {}) == (2, None)
    # already one of torchrun's processes: never relaunch
    assert processes_to_launch(None, 8, {"WORLD_SIZE": "8", "LOCAL_RANK": "3"}) == (1, None)
    assert processes_to_launch(None, 8, {"WORLD_SIZE": "1", "LOCAL_RANK": "0"}) == (1, None)


def test_one_process_never_gets_data_parallel_and_waits_long_at_barriers(tiny_model, tmp_path):
    from recipes.config.load import load_recipe
    from recipes.planning.plan import make_plan
    from recipes.plugins.registry import get_registry
    from recipes.training.distributed import timeout
    from recipes.training.model import process_device_map
    from recipes.training.trainer import single_process_gpus, training_arguments

    (tmp_path / "c.jsonl").write_text('{"text": "Bees."}\n')
    (tmp_path / "r.toml").write_text('[model]\npath = "bundled:tiny-qwen2"\n[distributed]\ntimeout_minutes = 90\n'
                                     '[[stages]]\nname = "a"\nkind = "pretrain"\n[[stages.data]]\npath = "c.jsonl"\n'
                                     'format = "text"\n')
    registry = get_registry()
    plan = make_plan(load_recipe(str(tmp_path / "r.toml"), registry), registry, str(tmp_path / "run"))
    args = training_arguments(plan.stages[0], "fp32", "cpu", plan.distributed)
    assert args.ddp_timeout == 90 * 60 and timeout(None).total_seconds() == 2 * 3600

    # the real TrainingArguments as on a machine with 4 GPUs: its n_gpu reads what the device set-up found
    assert args.n_gpu == 0  # device set-up done: use_cpu, no GPU
    args._n_gpu = 4
    assert args.n_gpu == 4  # control: the real property reports the 4, so the call below is what lowers it
    assert single_process_gpus(args) is args and args.n_gpu == 1
    # only the CPU branch can run here; the GPU branch (torch.cuda.current_device()) needs a GPU
    assert process_device_map("cpu") == {"": "cpu"}


@pytest.mark.parametrize("strategy, loss, refused", [
    ('strategy = "deepspeed"\nzero_stage = 3', "chunked", "ZeRO-3 partitions lm_head.weight"),
    ('strategy = "fsdp"', "chunked", "FSDP2 gathers lm_head.weight"),
    ('strategy = "deepspeed"\nzero_stage = 3', "standard", None),
    ('strategy = "deepspeed"\nzero_stage = 2', "chunked", None),
])
def test_sharded_heads_the_chunked_loss_cannot_read_are_refused(tmp_path, strategy, loss, refused):
    from click.testing import CliRunner

    from recipes.cli import main

    (tmp_path / "c.jsonl").write_text('{"text": "Bees."}\n')
    path = tmp_path / "r.toml"
    path.write_text(f'[model]\npath = "bundled:tiny-qwen2"\n[distributed]\n{strategy}\n[defaults]\nloss = "{loss}"\n'
                    '[[stages]]\nname = "a"\nkind = "pretrain"\n[[stages.data]]\npath = "c.jsonl"\nformat = "text"\n')
    result = CliRunner().invoke(main, ["validate", str(path)])
    if refused is None:
        assert result.exit_code == 0, result.output
    else:
        assert result.exit_code == 2 and refused in result.output and 'loss = "standard"' in result.output
        assert "defaults.loss" in result.output and "Traceback" not in result.output


def test_the_guard_lets_the_scalers_overflow_steps_pass_and_stops_a_real_nan():
    """A real GradScaler flow: an overflowing scale gives inf gradients, the guard lets the step pass,
    scaler.step skips it and update halves the scale; the next step trains. No scaler: fatal."""
    import torch

    from recipes.training.trainer import gradient_is_fatal

    torch.manual_seed(0)
    layer = torch.nn.Linear(4, 1)
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    scaler = torch.amp.GradScaler("cpu", init_scale=2.0 ** 120, growth_interval=1000)  # overflows fp32 too
    before = layer.weight.detach().clone()
    verdicts, scales = [], []
    for _ in range(80):
        optimizer.zero_grad()
        loss = layer(torch.full((2, 4), 1e4)).pow(2).sum()
        scaler.scale(loss).backward()
        scaler.unscale_(optimizer)  # as the Trainer's clipping does before on_pre_optimizer_step
        finite = all(bool(torch.isfinite(p.grad).all()) for p in layer.parameters())
        verdicts.append((finite, gradient_is_fatal(finite, scaler)))
        scaler.step(optimizer)
        scaler.update()
        scales.append(scaler.get_scale())
        if finite:
            break
    assert verdicts[0] == (False, False) and not any(fatal for _, fatal in verdicts)  # overflow steps passed
    assert verdicts[-1] == (True, False) and scales[-1] < 2.0 ** 120  # the scale came down, then a step trained
    assert not torch.equal(layer.weight, before)
    assert gradient_is_fatal(False, None) and not gradient_is_fatal(True, None)

    class Collapsed:  # a NaN that no scale fixes: the scale has fallen below 1
        def get_scale(self):
            return 0.5

    assert gradient_is_fatal(False, Collapsed())


def test_the_chunk_loop_runs_under_autocast_and_fp16_gradients_are_prescaled():
    import torch
    import torch.nn.functional as F

    from recipes.training import chunked_loss
    from recipes.training.chunked_loss import chunk_precision, linear_cross_entropy

    seen = []
    original = F.linear

    def spy(*args):
        out = original(*args)
        if out.shape[-1] == 50 and out.numel():  # the chunk loop's logits (not the model's own layers)
            seen.append((torch.is_autocast_enabled("cpu"), out.dtype))
        return out

    torch.manual_seed(0)
    head = torch.nn.Linear(16, 50, bias=False)  # a trainable fp32 head: the chunk loop runs under autocast

    class Tiny(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.body, self.lm_head = torch.nn.Linear(16, 16), head

        def get_output_embeddings(self):
            return self.lm_head

        def forward(self, input_ids, **kwargs):
            return self.lm_head(self.body(torch.nn.functional.one_hot(input_ids, 16).float()))

    model = Tiny()
    inputs = {"input_ids": torch.randint(0, 16, (2, 9)), "labels": torch.randint(0, 50, (2, 9))}
    chunked_loss.F.linear = spy
    try:
        plain = chunked_loss.chunked_lm_loss(model, inputs, chunk_size=4)
        assert seen and not any(on for on, _ in seen)
        seen.clear()
        with chunk_precision("cpu", torch.bfloat16):
            mixed = chunked_loss.chunked_lm_loss(model, inputs, chunk_size=4)
        assert seen and all(on and dtype == torch.bfloat16 for on, dtype in seen)
    finally:
        chunked_loss.F.linear = original
    assert mixed.dtype == torch.float32 and 1e-6 < abs(mixed.item() - plain.item()) < 5e-2

    # fp16: prescaling by the expected incoming gradient keeps tiny softmax entries out of subnormals
    h = torch.randn(64, 16, dtype=torch.float16, requires_grad=True)
    w = (torch.randn(3000, 16) * 0.01).to(torch.float16)  # near-uniform: softmax entries ~3e-4 / 64 labels
    t = torch.randint(0, 3000, (64,))
    exact = torch.autograd.grad(F.cross_entropy(F.linear(h.float(), w.float()), t, reduction="sum") * 2.0 ** 16 / 64,
                                h)[0]

    def grad(scale):
        loss = linear_cross_entropy(h, w, None, t, 16, grad_scale=scale) * (2.0 ** 16 / 64)
        return torch.autograd.grad(loss, h)[0].float()

    prescaled, unscaled = grad(2.0 ** 16 / 64), grad(1.0)
    error = lambda g: ((g - exact).norm() / exact.norm()).item()  # noqa: E731
    assert error(prescaled) < 1e-2 and error(prescaled) <= error(unscaled)


def test_a_partitioned_head_is_refused_at_the_loss_and_tensorboard_is_rank_zero_only(tmp_path, monkeypatch):
    import torch

    from recipes.builtin.callbacks import build_tensorboard
    from recipes.errors import RecipeError
    from recipes.training.chunked_loss import chunked_lm_loss

    class Partitioned(torch.nn.Module):  # what ZeRO-3 leaves after the head's forward: an empty weight
        def __init__(self):
            super().__init__()
            self.lm_head = torch.nn.Linear(4, 7, bias=False)

        def get_output_embeddings(self):
            return self.lm_head

        def forward(self, input_ids, **kwargs):
            out = self.lm_head(torch.ones(*input_ids.shape, 4))
            self.lm_head.weight.data = torch.empty(0)
            return out

    inputs = {"input_ids": torch.zeros(1, 3, dtype=torch.long), "labels": torch.zeros(1, 3, dtype=torch.long)}
    with pytest.raises(RecipeError, match="partitioned by ZeRO-3 or FSDP"):
        chunked_lm_loss(Partitioned(), inputs, chunk_size=2)
    monkeypatch.setenv("RANK", "1")
    assert build_tensorboard(None) is None
