"""A corpus of wrong recipes: each must exit 2 with no traceback and name the right line and field.

Every case edits the same good recipe (``GOOD``, line numbers in the comments) and lists what the
error output must contain: the ``file:line:column:`` where known, the dotted field, and the hint.
"""

from __future__ import annotations

import json

import pytest
from click.testing import CliRunner

from conftest import GOOD_RECIPE as GOOD
from conftest import write
from recipes.cli import main

# lines: 1 name, 2 [model], 3 path, 5 [[stages]], 6 name "domain", 7 kind, 9 [[stages.data]],
# 10 path, 11 format, 13 [[stages]], 14 name "sft", 15 kind, 17 [[stages.data]], 18 path, 19 format

STAGE0 = 'kind = "pretrain"'
STAGE1 = 'kind = "sft"'
QUANT = '[[stages]]\nname = "domain"'  # insert a [quantization] table before the first stage

CASES = [
    # TOML syntax
    ("syntax-unclosed-table", [("[model]", "[model")], [":2:7: TOML syntax error"]),
    ("syntax-unterminated-string", [('"bundled:tiny-qwen2"', '"bundled:tiny-qwen2')], [":3:", "TOML syntax error"]),
    ("syntax-duplicate-key", [(STAGE1, STAGE1 + "\nkind = \"sft\"")], [":16:", "TOML syntax error"]),
    ("syntax-missing-equals", [('name = "t"', 'name "t"')], [":1:", "TOML syntax error"]),
    # types
    ("type-rank-string", [(STAGE0, STAGE0 + '\nlora_rank = "sixteen"')], [":8:1: stages[0].lora_rank: ", "integer"]),
    ("type-lr-list", [(STAGE0, STAGE0 + "\nlearning_rate = [1]")], [":8:1: stages[0].learning_rate:"]),
    ("type-epochs-string", [(STAGE1, STAGE1 + '\nnum_train_epochs = "two"')], [":16:1: stages[1].num_train_epochs:"]),
    ("type-checkpointing", [(STAGE1, STAGE1 + "\ngradient_checkpointing = 3")], [":16:1: stages[1].gradient_checkpointing:"]),
    ("unknown-kind", [(STAGE0, 'kind = "finetune"')], [":7:1: stages[0].kind:", "unknown stage kind 'finetune'"]),
    ("unknown-precision", [(STAGE0, STAGE0 + '\nprecision = "fp8"')], [":8:1: stages[0].precision:"]),
    ("unknown-scheduler", [(STAGE0, STAGE0 + '\nlr_scheduler_type = "cosin"')], [":8:1: stages[0].lr_scheduler_type:", "'cosine'"]),
    # unknown and misspelled keys
    ("misspelled-top-level", [('name = "t"', 'nmae = "t"')], [":1:1: nmae: unknown key 'nmae'; did you mean \"name\"?"]),
    ("misspelled-model-path", [('path = "bundled:tiny-qwen2"', 'pth = "bundled:tiny-qwen2"')],
     [":3:1: model.pth: unknown key 'pth'; did you mean \"path\"?", ":2:1: model.path: required key 'path' is missing"]),
    ("misspelled-stage-key", [(STAGE1, STAGE1 + "\nlora_rnak = 8")], [":16:1: stages[1].lora_rnak:", 'did you mean "lora_rank"?']),
    ("misspelled-defaults-key", [("[[stages]]\nname = \"domain\"", "[defaults]\nlearning_rat = 1e-4\n\n[[stages]]\nname = \"domain\"")],
     [":6:1: defaults.learning_rat:", 'did you mean "learning_rate"?']),
    ("misspelled-source-key", [('format = "text"', 'fromat = "text"')],
     [":11:1: stages[0].data[0].fromat:", 'did you mean "format"?']),
    ("source-without-format", [('format = "text"\n', "")], [":9:1: stages[0].data[0]: ", "give path and format"]),
    ("source-both-ways", [('format = "text"', 'format = "text"\ndataset_info = "info.json"\ndataset = "x"')],
     [":9:1: stages[0].data[0]: ", "not both"]),
    ("dataset-info-entry-unknown", [('path = "chat.jsonl"\nformat = "messages"', 'dataset_info = "info.json"\ndataset = "alpaca_demo"')],
     [":19:1: stages[1].data[0].dataset: ", "no data set 'alpaca_demo' here; did you mean \"alpaca_zh\"?"]),
    ("dataset-info-hub-entry", [('path = "chat.jsonl"\nformat = "messages"', 'dataset_info = "info.json"\ndataset = "hub_only"')],
     [":19:1: stages[1].data[0].dataset: ", "recipes loads no data from the network. Download"]),
    ("chaining-on-first-stage", [(STAGE0, STAGE0 + '\nchaining = "stack"')], [":8:1: stages[0].chaining: chaining says how"]),
    ("chaining-unknown", [(STAGE1, STAGE1 + '\nchaining = "fuse"')], [":16:1: stages[1].chaining:", "'merge', 'continue' or 'stack'"]),
    ("zero-stage-with-ddp", [("[model]", '[distributed]\nzero_stage = 3\n[model]')], [":3:1: distributed.zero_stage: zero_stage applies to strategy \"deepspeed\""]),
    ("fsdp-with-8-bit", [("[model]", '[distributed]\nstrategy = "fsdp"\n[quantization]\nbackend = "bitsandbytes"\nbits = 8\n[model]')],
     [":3:1: distributed.strategy: FSDP cannot shard bitsandbytes' 8-bit weights"]),
    ("zero3-with-4-bit", [("[model]", '[distributed]\nstrategy = "deepspeed"\nzero_stage = 3\n[quantization]\nbackend = "bitsandbytes"\n[model]')],
     [":4:1: distributed.zero_stage: ZeRO-3 shards every parameter"]),
    ("strategy-unknown", [("[model]", '[distributed]\nstrategy = "megatron"\n[model]')], [":3:1: distributed.strategy:", "'ddp', 'fsdp' or 'deepspeed'"]),
    ("packing-on-pretrain", [(STAGE0, STAGE0 + "\npacking = true")], [":8:1: stages[0].packing: packing is for SFT stages"]),
    ("unknown-table", [("[model]", "[trainer]\nepochs = 2\n[model]")], [":2:1: trainer: unknown key 'trainer'"]),
    # references between stages
    ("base-misspelled", [(STAGE1, STAGE1 + '\nbase = "domian"')], [":16:1: stages[1].base:", 'did you mean "domain"?']),
    ("base-later-stage", [(STAGE0, STAGE0 + '\nbase = "sft"')], [":8:1: stages[0].base:", "comes later in the plan"]),
    ("base-itself", [(STAGE1, STAGE1 + '\nbase = "sft"')], [":16:1: stages[1].base:", "cannot start from itself"]),
    ("stage-name-twice", [('name = "sft"', 'name = "domain"')], [":14:1: stages[1].name: stage name 'domain' is used twice"]),
    ("stage-name-spaces", [('name = "sft"', 'name = "my stage"')], [":14:1: stages[1].name:", "use letters, digits"]),
    ("stage-name-reserved", [('name = "sft"', 'name = "model"')], [":14:1: stages[1].name:", "reserved"]),
    # values out of range
    ("rank-zero", [(STAGE0, STAGE0 + "\nlora_rank = 0")], [":8:1: stages[0].lora_rank:", "greater than 0"]),
    ("alpha-negative", [(STAGE0, STAGE0 + "\nlora_alpha = -1")], [":8:1: stages[0].lora_alpha:", "greater than 0"]),
    ("dropout-above-one", [(STAGE0, STAGE0 + "\nlora_dropout = 1.5")], [":8:1: stages[0].lora_dropout:", "less than 1"]),
    ("lr-zero", [(STAGE0, STAGE0 + "\nlearning_rate = 0")], [":8:1: stages[0].learning_rate:", "greater than 0"]),
    ("warmup-ratio-above-one", [(STAGE0, STAGE0 + "\nwarmup_ratio = 1.5")], [":8:1: stages[0].warmup_ratio:"]),
    ("warmup-steps-negative", [(STAGE0, STAGE0 + "\nwarmup_steps = -10")], [":8:1: stages[0].warmup_steps:"]),
    ("batch-zero", [(STAGE1, STAGE1 + "\nper_device_train_batch_size = 0")], [":16:1: stages[1].per_device_train_batch_size:"]),
    ("accumulation-negative", [(STAGE1, STAGE1 + "\ngradient_accumulation_steps = -2")], [":16:1: stages[1].gradient_accumulation_steps:"]),
    ("epochs-zero", [(STAGE1, STAGE1 + "\nnum_train_epochs = 0")], [":16:1: stages[1].num_train_epochs:"]),
    ("cutoff-beyond-context", [(STAGE0, STAGE0 + "\ncutoff_len = 100000")],
     [":8:1: stages[0].cutoff_len: cutoff_len 100000 is longer than the model's context (4096"]),
    ("cutoff-in-defaults-beyond-context", [("[[stages]]\nname = \"domain\"", "[defaults]\ncutoff_len = 8192\n\n[[stages]]\nname = \"domain\"")],
     [":6:1: defaults.cutoff_len:", "set at most 4096"]),
    ("lora-target-wrong-architecture", [(STAGE0, STAGE0 + '\nlora_target = ["q_proj", "c_attn"]')],
     [":8:1: stages[0].lora_target: LoRA target 'c_attn' is not a linear layer of a qwen2 model"]),
    ("train-tokens-true", [(STAGE1, STAGE1 + "\ntrain_tokens = true")],
     [":16:1: stages[1].train_tokens:", 'give "auto", false, or a list of token strings']),
    ("train-tokens-empty", [(STAGE1, STAGE1 + "\ntrain_tokens = []")],
     [":16:1: stages[1].train_tokens:", "give at least one token"]),
    ("lora-target-misspelled", [(STAGE0, STAGE0 + '\nlora_target = "q_prj"')], ['did you mean "q_proj"?']),
    ("lora-target-empty", [(STAGE0, STAGE0 + '\nlora_target = ""')], [":8:1: stages[0].lora_target:"]),
    # files
    ("data-file-missing", [('path = "chat.jsonl"', 'path = "chats.jsonl"')], [":18:1: stages[1].data[0].path: 'chats.jsonl' matches no file"]),
    ("data-glob-matches-nothing", [('path = "corpus.jsonl"', 'path = "data/*.parquet"')], [":10:1: stages[0].data[0].path:", "matches no file"]),
    ("model-folder-missing", [('"bundled:tiny-qwen2"', '"./no-model"')], [":3:1: model.path:", "is not a model folder (no config.json)"]),
    ("bundled-model-unknown", [('"bundled:tiny-qwen2"', '"bundled:tiny-qwen3"')], [":3:1: model.path:", 'did you mean "tiny-qwen2"?']),
    ("no-stages", [(GOOD[GOOD.index("[[stages]]"):], "")], ["stages: required key 'stages' is missing"]),
    ("stage-without-data", [('\n[[stages.data]]\npath = "chat.jsonl"\nformat = "messages"\n', "")], [":13:1: stages[1].data: required key 'data' is missing"]),
    # plugins and their options
    ("format-unknown", [('format = "text"', 'format = "txt"')], [":11:1: stages[0].data[0].format: unknown data format 'txt'; did you mean \"text\"?"]),
    ("format-option-unknown", [('format = "text"', 'format = "text"\noptions = { splitt = "line" }')],
     [":12:1: stages[0].data[0].options.splitt: unknown option 'splitt'"]),
    ("format-wrong-kind", [('format = "messages"', 'format = "text"')], [":19:1: stages[1].data[0].format: format 'text' gives documents"]),
    ("backend-unknown", [(QUANT, '[quantization]\nbackend = "bnb"\n\n' + QUANT)], [":6:1: quantization.backend: unknown quantization backend 'bnb'"]),
    ("backend-option-value", [(QUANT, '[quantization]\nbackend = "bitsandbytes"\nbits = 3\n\n' + QUANT)], [":7:1: quantization.bits:", "4 or 8"]),
    ("backend-option-misspelled", [(QUANT, '[quantization]\nbackend = "bitsandbytes"\nquant_typ = "nf4"\n\n' + QUANT)],
     [":7:1: quantization.quant_typ: unknown option 'quant_typ'; did you mean \"quant_type\"?"]),
    ("callback-unknown", [('name = "t"', 'name = "t"\ncallbacks = ["progres"]')], [":2:1: callbacks", 'did you mean "progress"?']),
]


@pytest.fixture(scope="module")
def recipe_dir(tmp_path_factory):
    folder = tmp_path_factory.mktemp("corpus")
    write(folder / "corpus.jsonl", '{"text": "Bees."}\n')
    write(folder / "info.json", json.dumps({"alpaca_zh": {"file_name": "alpaca.json"},
                                            "hub_only": {"hf_hub_url": "someone/data"}}))
    write(folder / "alpaca.json", json.dumps([{"instruction": "Q", "input": "", "output": "A"}]))
    write(folder / "chat.jsonl", '{"messages": [{"role": "user", "content": "Q"}, '
                                 '{"role": "assistant", "content": "A"}]}\n')
    return folder


def test_the_corpus_is_large_enough():
    assert len(CASES) >= 30 and len({name for name, _, _ in CASES}) == len(CASES)


@pytest.mark.parametrize("name,edits,expected", CASES, ids=[c[0] for c in CASES])
def test_wrong_recipe(recipe_dir, name, edits, expected):
    text = GOOD
    for old, new in edits:
        assert old in text, f"{name}: edit does not apply"
        text = text.replace(old, new, 1)
    path = write(recipe_dir / f"{name}.toml", text)
    result = CliRunner().invoke(main, ["validate", str(path)])
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    assert isinstance(result.exception, SystemExit) and result.exception.code == 2  # exited, did not raise
    lines = result.output.strip().splitlines()
    assert all(line.startswith(("error: ", "warning: ")) for line in lines), lines  # one line per problem
    for fragment in expected:
        if fragment.startswith(":"):
            fragment = f"{path}{fragment}"
        assert any(fragment in line for line in lines), f"{fragment!r} not in {lines}"
