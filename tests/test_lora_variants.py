"""LoRA variants (rsLoRA, DoRA, PiSSA/OLoRA initialisation), LoRA+ and the embedding learning rate,
NEFTune: validated, carried to peft and transformers, planned, and published so that plain
transformers loads the result."""

from __future__ import annotations

import json

import pytest
import torch
from click.testing import CliRunner
from safetensors.torch import load_file

from conftest import write
from test_chaining import CHAIN
from recipes.cli import main

# test_chaining's two-stage recipe (pre-training, then SFT merged onto it), with the variants set
RECIPE = "eval_matrix = false\n" + CHAIN.format(mode="merge").replace("max_steps = 3\n", "max_steps = 2\nlora_rank = 4\n{defaults}\n").replace(
    'chaining = "merge"\n', 'chaining = "merge"\n{sft}\n')


def _recipe(tmp_path, defaults="", sft=""):
    write(tmp_path / "corpus.jsonl", "".join(json.dumps({"text": f"Bees make honey {i}. " * 12}) + "\n" for i in range(8)))
    write(tmp_path / "chat.jsonl", "".join(json.dumps({"messages": [
        {"role": "user", "content": f"Question {i} about bees?"},
        {"role": "assistant", "content": f"Answer {i}: bees make honey."}]}) + "\n" for i in range(8)))
    return write(tmp_path / "variants.toml", RECIPE.format(defaults=defaults, sft=sft))


def _invoke(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_rslora_dora_loraplus_neftune_run_and_the_export_loads_in_transformers(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = _recipe(tmp_path, defaults="use_rslora = true\nuse_dora = true\nloraplus_lr_ratio = 16.0",
                     sft="neftune_noise_alpha = 5.0\nembedding_learning_rate = 1e-3")
    result = _invoke("run", recipe, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "LoRA rsLoRA DoRA r=4" in result.output
    stages = tmp_path / "run" / "stages"
    for stage in ("pt", "sft"):
        config = json.loads((stages / stage / "adapter" / "adapter_config.json").read_text())
        assert config["use_rslora"] is True and config["use_dora"] is True, stage
        assert any("lora_magnitude_vector" in k for k in load_file(stages / stage / "adapter" / "adapter_model.safetensors"))
    recorded = json.loads((tmp_path / "run" / "recipe.json").read_text())
    settings = {s["name"]: s["settings"] for s in recorded["stages"]}
    assert settings["sft"]["neftune_noise_alpha"] == 5.0 and settings["pt"]["neftune_noise_alpha"] is None

    # the published merged models are base + the DoRA adapters, merged by peft (not the base unchanged)
    merged = AutoModelForCausalLM.from_pretrained(stages / "pt" / "merged")
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                        str(stages / "pt" / "adapter")).merge_and_unload()
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    ours, theirs = merged.state_dict(), rebuilt.state_dict()
    assert max((ours[k] - theirs[k]).abs().max().item() for k in ours) < 1e-5
    assert max((ours[k] - base[k]).abs().max().item() for k in ours) > 1e-4  # control: training changed it

    exported = tmp_path / "exported"
    result = _invoke("export", tmp_path / "run", "--to", exported)
    assert result.exit_code == 0, result.output + repr(result.exception)
    model = AutoModelForCausalLM.from_pretrained(exported)
    ids = torch.tensor([[1, 2, 3, 4]])
    assert torch.isfinite(model(input_ids=ids).logits).all()


def _trainer(tmp_path, tiny_model, **options):
    """OUR StageTrainer on the tiny model with LoRA (DoRA) and trained token rows, its optimizer built."""
    from transformers import AutoModelForCausalLM

    from recipes.config.schema import KIND_DEFAULTS, StageSettings
    from recipes.training.model import lora_config
    from recipes.training.trainer import StageTrainer, TrainingArguments

    from peft import get_peft_model

    settings = StageSettings(**{**KIND_DEFAULTS["sft"], "use_dora": True, "lora_rank": 4})
    model = AutoModelForCausalLM.from_pretrained(tiny_model)
    model = get_peft_model(model, lora_config(settings, {"trainable_token_indices": {"embed_tokens": [1, 2]}}))
    args = TrainingArguments(output_dir=str(tmp_path / "out"), learning_rate=1e-4, weight_decay=0.01,
                             use_cpu=True, report_to=[])
    trainer = StageTrainer(model=model, args=args, **options)
    trainer.create_optimizer_and_scheduler(num_training_steps=10)
    return trainer


def _rates(trainer) -> dict[str, set]:
    names = {id(p): n for n, p in trainer.model.named_parameters()}
    rates: dict[str, set] = {}
    for group in trainer.optimizer.param_groups:
        for p in group["params"]:
            name = names[id(p)]
            kind = ("rows" if "trainable_tokens_delta" in name else "B" if "lora_B" in name
                    else "A" if "lora_A" in name else "magnitude" if "magnitude" in name else name)
            rates.setdefault(kind, set()).add(group["lr"])
    return rates


def test_the_optimizer_groups_carry_the_configured_rates(tmp_path, tiny_model):
    trainer = _trainer(tmp_path, tiny_model, loraplus_lr_ratio=16.0, embedding_learning_rate=1e-3)
    rates = _rates(trainer)
    assert rates == {"A": {1e-4}, "B": {1.6e-3}, "magnitude": {1.6e-3}, "rows": {1e-3}}, rates
    # every trainable weight is in exactly one group, and the scheduler starts from each group's own rate
    trainable = [p for p in trainer.model.parameters() if p.requires_grad]
    grouped = [p for g in trainer.optimizer.param_groups for p in g["params"]]
    assert len(grouped) == len(trainable) == len({id(p) for p in grouped})
    assert sorted(trainer.lr_scheduler.base_lrs) == sorted(g["lr"] for g in trainer.optimizer.param_groups)
    # control: without the options every weight learns at learning_rate
    plain = _rates(_trainer(tmp_path, tiny_model))
    assert set().union(*plain.values()) == {1e-4}, plain


def test_pissa_is_published_as_a_plain_lora_of_the_original_base(tmp_path, tiny_model):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    recipe = _recipe(tmp_path, defaults='init_lora_weights = "pissa_niter_2"\nlora_target = ["q_proj", "v_proj"]')
    text = recipe.read_text()
    recipe.write_text(text[:text.index("[[stages]]\nname = \"sft\"")])  # the pre-training stage alone
    result = _invoke("run", recipe, "-o", tmp_path / "run")
    assert result.exit_code == 0, result.output + repr(result.exception)
    assert "converted to a plain LoRA" in result.output
    folder = tmp_path / "run" / "stages" / "pt"
    config = json.loads((folder / "adapter" / "adapter_config.json").read_text())
    assert config["r"] == 8 and config["init_lora_weights"] is True  # rank x 2, applies to the original weights
    merged = load_file(folder / "merged" / "model.safetensors")
    rebuilt = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(tiny_model),
                                        str(folder / "adapter")).merge_and_unload().state_dict()
    assert max((merged[k] - rebuilt[k]).abs().max().item() for k in merged) < 1e-4
    base = AutoModelForCausalLM.from_pretrained(tiny_model).state_dict()
    assert max((merged[k] - base[k]).abs().max().item() for k in merged) > 1e-4  # control: it trained


@pytest.mark.parametrize("edit, message", [
    ('init_lora_weights = "loftq"', '"loftq" is not supported'),
    ('init_lora_weights = "pissa_niter_x"', "pissa_niter_N"),
    ("loraplus_lr_ratio = 0.0", "loraplus_lr_ratio"),
])
def test_validate_refuses_bad_variants(tmp_path, edit, message):
    result = _invoke("validate", _recipe(tmp_path, defaults=edit))
    assert result.exit_code == 2 and message in result.output, result.output


def test_neftune_is_refused_in_a_pretraining_stage(tmp_path):
    recipe = _recipe(tmp_path)
    recipe.write_text(recipe.read_text().replace('kind = "pretrain"\n', 'kind = "pretrain"\nneftune_noise_alpha = 5.0\n'))
    result = _invoke("validate", recipe)
    assert result.exit_code == 2 and "NEFTune is for SFT stages" in result.output, result.output
    assert _invoke("validate", _recipe(tmp_path, defaults="neftune_noise_alpha = 5.0")).exit_code == 0


def test_the_plan_counts_doras_memory(tmp_path, tiny_model):
    def planned(defaults):
        result = _invoke("plan", _recipe(tmp_path, defaults=defaults), "--json")
        assert result.exit_code == 0, result.output
        return json.loads(result.output)["stages"][0]

    plain, dora = planned(""), planned("use_dora = true")
    model = json.loads((tiny_model / "config.json").read_text())
    rows = model["num_hidden_layers"] * (2 * model["hidden_size"] + 2 * model["num_key_value_heads"] * model["hidden_size"]
                                         // model["num_attention_heads"] + 2 * model["intermediate_size"] + model["hidden_size"])
    assert dora["parameters"]["trainable"] - plain["parameters"]["trainable"] == rows  # a magnitude per output row
    plain, dora = plain["memory"], dora["memory"]
    assert dora["lora_weights"] - plain["lora_weights"] == rows * 4
    assert dora["activations"] > plain["activations"]
    assert dora["total"] > plain["total"]


def test_a_llamafactory_config_with_the_variants_imports_them(tmp_path):
    import yaml

    from recipes.config.load import load_recipe
    from recipes.plugins.registry import get_registry
    from test_import_llamafactory import DATA, run_import

    config = {"model_name_or_path": "bundled:tiny-qwen2", "stage": "sft", "finetuning_type": "lora",
              "dataset": "identity", "output_dir": "saves/x", "use_rslora": True, "loraplus_lr_ratio": 16,
              "pissa_init": True, "pissa_iter": 4, "neftune_noise_alpha": 5, "report_to": ["wandb", "swanlab"]}
    code, output = run_import([write(tmp_path / "sft.yaml", yaml.safe_dump(config)), "--dataset-dir", DATA,
                               "-o", tmp_path / "r.toml"])
    assert code == 0, output  # the recipes-wandb and recipes-swanlab plugins are installed beside the host (.ci/run)
    assert 'callbacks = ["progress", "metrics_jsonl", "wandb", "swanlab"]' in (tmp_path / "r.toml").read_text()
    recipe = load_recipe(str(tmp_path / "r.toml"), get_registry()).recipe
    settings = recipe.stages[0].settings(recipe.defaults)
    assert (settings.use_rslora, settings.loraplus_lr_ratio, settings.init_lora_weights, settings.neftune_noise_alpha,
            settings.use_dora) == (True, 16.0, "pissa_niter_4", 5.0, False)
    assert "use_rslora" not in output and "loraplus" not in output  # nothing left to check by hand for them
