"""QLoRA publishes the adapter merged into the unquantized base, which is not the model that trained:
the stage evaluates the published merged model once on its held-out set and records what merging
changed, in stage.json and in the report (tiny Qwen2, bitsandbytes 4-bit on this CPU)."""

from __future__ import annotations

import json
import math
import textwrap

from click.testing import CliRunner

from conftest import write
from recipes.cli import main

RECIPE = textwrap.dedent("""
    [model]
    path = "bundled:tiny-qwen2"
    {quantization}
    [defaults]
    max_steps = 3
    logging_steps = 1
    save_steps = 3
    learning_rate = 1e-2
    per_device_train_batch_size = 4
    gradient_accumulation_steps = 1
    cutoff_len = 64
    val_size = 0.2
    [[stages]]
    name = "domain"
    kind = "pretrain"
    [[stages.data]]
    path = "bundled:domain_corpus.jsonl"
    format = "text"
""")
QLORA = '[quantization]\nbackend = "bitsandbytes"\nbits = 4\nquant_type = "nf4"'


def run(tmp_path, quantization: str):
    recipe = write(tmp_path / "r.toml", RECIPE.format(quantization=quantization))
    # (a LoRA stage records no merged evaluation: tests/test_stage_teardown.py checks it)
    result = CliRunner().invoke(main, ["run", str(recipe), "-o", str(tmp_path / "run")], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output + repr(result.exception)
    return json.loads((tmp_path / "run" / "stages" / "domain" / "stage.json").read_text()), result.output


def test_qlora_records_the_merged_models_held_out_loss_beside_the_quantized_ones(tmp_path):
    stage, output = run(tmp_path, QLORA)
    merged, change, after = stage["eval_loss_merged"], stage["eval_loss_merged_change"], stage["eval_loss_after"]
    assert math.isfinite(merged) and math.isclose(change, merged - after, abs_tol=1e-9)
    assert change != 0.0  # nf4 weights against the unquantized base: merging does change the model
    assert abs(change) < 0.5 * after  # the same adapter on nearly the same weights
    assert f"{change:+.4f} from the quantized model's {after:.4f}" in output
    report = (tmp_path / "run" / "report" / "report.md").read_text()
    assert "merged eval change" in report and f"{change:+.4f}" in report

