"""`recipes import llamafactory` carries every key that has a recipe equivalent, with the value
LLaMA-Factory would use; refuses what it cannot read by naming what the file is; never copies a secret.
Each test imports a small config through the real CLI and reads the written recipe back."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml
from click.testing import CliRunner

from recipes.cli import main
from recipes.config.load import load_recipe
from recipes.plugins.registry import get_registry
from conftest import write

DATA = Path(__file__).parent / "fixtures" / "lf_data"
BASE = {"model_name_or_path": "bundled:tiny-qwen2", "stage": "sft", "do_train": True, "finetuning_type": "lora",
        "dataset": "identity", "output_dir": "saves/x"}
SECRET = "hf_SeCrEtVaLuE0123456789"


def imported(tmp_path: Path, extra: dict, *more: dict, data: Path = DATA):
    """Import BASE + ``extra`` (and further configs); (exit code, output, recipe text, recipe or None)."""
    paths = []
    for number, keys in enumerate((extra, *more)):
        paths.append(write(tmp_path / f"c{number}.yaml", yaml.safe_dump({**BASE, **keys})))
    out = tmp_path / "r.toml"
    result = CliRunner().invoke(main, ["import", "llamafactory", *map(str, paths), "--dataset-dir", str(data),
                                       "-o", str(out)])
    text = out.read_text() if out.is_file() else ""
    recipe = load_recipe(str(out), get_registry()).recipe if result.exit_code == 0 else None
    return result.exit_code, result.output, text, recipe


def settings(recipe, index: int = 0):
    return recipe.stages[index].settings(recipe.defaults)


def test_a_mix_by_probabilities_becomes_weights_and_data_inspect_shows_its_shares(tmp_path, tiny_model):
    folder = tmp_path / "data"
    write(folder / "domain.jsonl", "".join(json.dumps({"instruction": f"Tax rule {i}?", "output": f"Rule {i} says "
                                                       "what it says about the tax."}) + "\n" for i in range(20)))
    write(folder / "general.jsonl", "".join(json.dumps({"instruction": f"General question {i}?", "output": "A general "
                                                        f"answer number {i}."}) + "\n" for i in range(200)))
    write(folder / "dataset_info.json", json.dumps({"domain": {"file_name": "domain.jsonl"},
                                                    "general": {"file_name": "general.jsonl"}}))
    code, output, text, recipe = imported(tmp_path, {"dataset": "domain,general", "mix_strategy": "interleave_under",
                                                     "interleave_probs": "0.9,0.1"}, data=folder)
    assert code == 0, output
    assert [(d.dataset, d.weight) for d in recipe.stages[0].data] == [("domain", 0.9), ("general", 0.1)]
    assert "mix_strategy interleave_under is written as weights (domain 90%, general 10%)" in output
    assert "concatenated" not in text
    result = CliRunner().invoke(main, ["data", "inspect", str(tmp_path / "r.toml"), "--json", "-n", "0"])
    assert result.exit_code == 0, result.output
    mix = {m["name"]: m for m in json.loads(result.output)["stages"][0]["mix"]}
    assert mix["domain"]["share"] == pytest.approx(0.9, abs=0.03)
    assert mix["general"]["share"] == pytest.approx(0.1, abs=0.03)
    assert mix["domain"]["examples"] == 20  # one pass over the main source per epoch


def test_equal_weights_without_probabilities_and_concat_stays_concatenation(tmp_path):
    code, output, _, recipe = imported(tmp_path, {"dataset": "identity,alpaca_en_demo",
                                                  "mix_strategy": "interleave_over"})
    assert code == 0, output
    assert [d.weight for d in recipe.stages[0].data] == [1.0, 1.0]
    code, output, text, recipe = imported(tmp_path / "b", {"dataset": "identity,alpaca_en_demo",
                                                           "mix_strategy": "concat", "interleave_probs": "0.5,0.5"})
    assert code == 0, output
    assert [d.weight for d in recipe.stages[0].data] == [None, None]
    assert "LLaMA-Factory ignores it with mix_strategy concat" in text


def test_wrong_probabilities_are_refused_naming_the_key(tmp_path):
    code, output, _, _ = imported(tmp_path, {"dataset": "identity,alpaca_en_demo", "mix_strategy": "interleave_under",
                                             "interleave_probs": "0.9"})
    assert code == 2 and re.search(r"c0.yaml:\d+: interleave_probs: interleave_probs gives 1 probabilities for 2", output)


def test_keys_with_a_recipe_equivalent_are_carried(tmp_path):
    code, output, text, recipe = imported(tmp_path, {
        "dataset": "identity", "eval_dataset": "alpaca_en_demo", "max_samples": 3, "per_device_eval_batch_size": 2,
        "flash_attn": "sdpa", "ddp_timeout": 180000000, "model_revision": "v1.5", "preprocessing_num_workers": 16})
    assert code == 0, output
    stage = recipe.stages[0]
    assert [d.max_samples for d in stage.data + stage.eval_data] == [3, 3]
    assert settings(recipe).per_device_eval_batch_size == 2
    assert settings(recipe).attn_implementation == "sdpa"
    assert recipe.distributed.timeout_minutes == 3000000  # 180,000,000 s in minutes
    assert recipe.model.revision == "v1.5"
    assert "--workers N" in text and "in one process" not in text
    assert "unsupported" not in text and "not configurable" not in text


@pytest.mark.parametrize("value, expected", [("disabled", "eager"), ("fa2", "flash_attention_2"),
                                             ("fa3", "flash_attention_2"), ("auto", "auto")])
def test_flash_attn_maps_to_the_attention_kernel(tmp_path, value, expected):
    code, output, _, recipe = imported(tmp_path, {"flash_attn": value})
    assert code == 0, output
    assert settings(recipe).attn_implementation == expected
    assert ("has no FlashAttention 3" in output) == (value == "fa3")


def test_the_main_revision_is_the_default_and_pretraining_max_samples_is_a_check(tmp_path):
    code, output, text, recipe = imported(tmp_path, {"model_revision": "main", "stage": "pt", "dataset": "c4_demo",
                                                     "max_samples": 5})
    assert code == 0, output
    assert recipe.model.revision is None and recipe.stages[0].data[0].max_samples is None
    assert "max_samples = 5 is left out (pre-training)" in output and "cutoff_len blocks" in output


def test_fsdp_becomes_the_fsdp_strategy_with_the_standard_loss(tmp_path):
    code, output, _, recipe = imported(tmp_path, {"fsdp": "full_shard auto_wrap offload", "quantization_bit": 4})
    assert code == 0, output
    d = recipe.distributed
    assert (d.strategy, d.fsdp_sharding, d.cpu_offload) == ("fsdp", "full_shard", True)
    assert settings(recipe).loss == "standard"
    assert recipe.quantization.options()["quant_storage"] == "bf16"  # FSDP shards 4-bit weights stored as bf16


@pytest.mark.parametrize("report_to, callbacks", [("none", ["progress", "metrics_jsonl"]),
                                                  ("mlflow", ["progress", "metrics_jsonl", "mlflow"])])
def test_report_to_picks_the_callbacks(tmp_path, report_to, callbacks):
    code, output, _, recipe = imported(tmp_path, {"report_to": report_to})
    assert code == 0, output
    assert recipe.callbacks == callbacks


def test_report_to_tensorboard_keeps_the_default_wandb_and_swanlab_are_added(tmp_path):
    from recipes.plugins.registry import get_registry

    code, output, _, recipe = imported(tmp_path, {"report_to": ["tensorboard", "wandb", "swanlab", "clearml"]})
    assert code == 0, output
    default = [c.name for c in get_registry().callbacks.values() if c.default]
    # the recipes-wandb and recipes-swanlab plugins (installed beside the host)
    assert recipe.callbacks == [*default, "wandb", "swanlab"]
    assert "report_to clearml: no equivalent" in output and "report_to swanlab" not in output


def test_liger_kernels_become_the_liger_loss(tmp_path):
    code, output, text, recipe = imported(tmp_path, {"enable_liger_kernel": True})
    assert code == 0, output
    assert settings(recipe).loss == "liger"
    assert "no Liger kernels" not in text and "fused linear cross-entropy" in text


@pytest.mark.parametrize("key", ["warmup_steps", "logging_steps", "save_steps", "eval_steps"])
def test_a_fractional_step_count_is_never_written_as_a_float(tmp_path, key):
    code, output, text, recipe = imported(tmp_path, {key: 0.1, "val_size": 2})
    assert code == 0, output
    if key == "warmup_steps":  # a share of all steps: the recipe's warmup_ratio
        assert settings(recipe).warmup_ratio == 0.1 and recipe.stages[0].warmup_steps is None
    else:
        assert getattr(recipe.stages[0], key) is None
        assert f"{key} = 0.1 is a share of all steps; left out" in output
    assert not re.search(rf"^{key} = 0\.1", text, re.MULTILINE)


@pytest.mark.parametrize("key", ["hf_hub_token", "ms_hub_token", "om_hub_token", "swanlab_api_key",
                                 "swanlab_lark_secret", "wandb_api_key"])
def test_a_secret_is_written_nowhere(tmp_path, key):
    code, output, text, _ = imported(tmp_path, {key: SECRET})
    assert code == 0, output
    assert SECRET not in text and SECRET not in output
    assert f"{key} is left out; its value is not written anywhere (a secret)" in output
    assert f"# {key}: left out, its value not copied" in text


def test_different_deepspeed_configs_take_the_strongest_and_name_the_stage_that_changed(tmp_path):
    write(tmp_path / "z3.json", json.dumps({"zero_optimization": {"stage": 3}}))
    pt = {"stage": "pt", "dataset": "c4_demo", "output_dir": "saves/pt"}
    sft = {"adapter_name_or_path": "saves/pt", "deepspeed": str(tmp_path / "z3.json")}
    code, output, _, recipe = imported(tmp_path, pt, sft)
    assert code == 0, output
    assert (recipe.distributed.strategy, recipe.distributed.zero_stage) == ("deepspeed", 3)
    assert ("stage pt (c0.yaml): plain data parallel in its config, DeepSpeed ZeRO-3 here: the recipe's "
            "[distributed] applies to every stage") in output
    assert "stage x (c1.yaml)" not in output  # the SFT stage's own choice: nothing to say


def test_cosine_with_min_lr_is_written_as_cosine_with_a_check(tmp_path):
    code, output, text, recipe = imported(tmp_path, {"lr_scheduler_type": "cosine_with_min_lr",
                                                     "lr_scheduler_kwargs": {"min_lr_rate": 0.1}})
    assert code == 0, output
    assert settings(recipe).lr_scheduler_type == "cosine"
    assert "cosine_with_min_lr is written as cosine" in output


@pytest.mark.parametrize("keys, what", [
    ({"model": "Qwen/Qwen3-4B", "model_class": "llm", "train_dataset": "data/v1_sft_demo.yaml",
      "peft_config": {"name": "lora", "r": 16}}, "a LLaMA-Factory v1 config"),
    ({"compute_environment": "LOCAL_MACHINE", "distributed_type": "FSDP", "num_processes": 2},
     "an accelerate launcher config"),
    ({"model_name_or_path": "Qwen/Qwen3-4B", "template": "qwen3", "task": "mmlu_test", "n_shot": 5},
     "a benchmark-evaluation config"),
    ({"model_name_or_path": "Qwen/Qwen3-4B", "stage": "sft", "do_predict": True, "eval_dataset": "identity",
      "predict_with_generate": True}, "a prediction config"),
    ({"model_name_or_path": "Qwen/Qwen3-4B", "template": "qwen3", "infer_backend": "vllm"}, "an inference config"),
])
def test_files_that_are_not_training_configs_are_named_for_what_they_are(tmp_path, keys, what):
    config = write(tmp_path / "other.yaml", yaml.safe_dump(keys))
    result = CliRunner().invoke(main, ["import", "llamafactory", str(config), "--dataset-dir", str(DATA),
                                       "-o", str(tmp_path / "r.toml")])
    assert result.exit_code == 2
    assert what in result.output and "no dataset" not in result.output
    assert "Traceback" not in result.output and len(result.output.strip().splitlines()) == 1


def test_an_invalid_model_path_is_never_offered_as_a_download(tmp_path):
    code, output, _, _ = imported(tmp_path, {"model_name_or_path": "/no/such/folder/qwen"})
    assert "hf download /no/such" not in output and "neither a folder here nor a hub id" in output


def test_the_key_table_renders_every_key_the_importer_knows():
    from recipes.config.importing.llamafactory_keys import HANDLED, LEFT_OUT, SECRETS, SETTINGS, render_key_table

    table = render_key_table()
    for key in [*SETTINGS, *HANDLED, *LEFT_OUT, *SECRETS]:
        assert f"`{key}`" in table, key
    for supported in ("max_samples", "per_device_eval_batch_size", "flash_attn", "ddp_timeout", "model_revision",
                      "interleave_probs", "fsdp", "report_to", "enable_liger_kernel"):
        row = next(line for line in table.splitlines() if line.startswith(f"| `{supported}`"))
        assert "left out" not in row, row
