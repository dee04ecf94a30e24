"""lm-evaluation-harness as a benchmark scorer, in-process on a loaded LoRA model, offline: on the
benchmark's own files it picks the same answer as the built-in scorer for every item (the same
prompt, the letter's log-likelihood instead of its logit), and it runs a user's task YAML."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from recipes.config.load import load_recipe
from recipes.plugins.registry import get_registry



def write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture(scope="module")
def loaded(tmp_path_factory):
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from qwen_recipes.tiny import tiny_qwen2_path

    torch.manual_seed(0)
    path = tiny_qwen2_path()
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    model = get_peft_model(model, LoraConfig(r=4, target_modules="all-linear", init_lora_weights=False))
    return model, AutoTokenizer.from_pretrained(path)


def test_lm_eval_scores_the_same_items_in_process(tmp_path, loaded):
    from recipes.benchmarks.evaluate import score_benchmarks
    from recipes.planning.plan import make_plan

    header = "id,question,A,B,C,D,answer"
    for subject in ("hive", "honey"):
        write(tmp_path / "exam" / "dev" / f"{subject}_dev.csv", header + ",explanation\n"
              + "".join(f"{i},{subject} example {i},a{i},b{i},c{i},d{i},{'ABCD'[i]},\n" for i in range(2)))
        write(tmp_path / "exam" / "val" / f"{subject}_val.csv", header + "\n"
              + "".join(f"{i},{subject} question {i},w{i},x{i},y{i},z{i},{'ABCD'[i % 4]}\n" for i in range(6)))
    rows = [{"question": f"q{i}", "choices": ["yes", "no", "maybe"], "answer": i % 3} for i in range(5)]
    data = write(tmp_path / "mine" / "items.jsonl", "".join(json.dumps(r) + "\n" for r in rows))
    write(tmp_path / "mine" / "mine.yaml", f"""task: my_local_task
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}\\nAnswer:"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: answer
metric_list:
  - metric: acc
""")
    write(tmp_path / "corpus.jsonl", '{"text": "hello"}\n')
    recipe = write(tmp_path / "r.toml", """name = "lm"
[model]
path = "bundled:tiny-qwen2"
[[benchmarks]]
name = "builtin"
path = "exam"
shots = 2
[[benchmarks]]
name = "harness"
path = "exam"
shots = 2
scorer = "lm-eval"
[[benchmarks]]
name = "mine"
path = "mine"
scorer = "lm-eval"
options = {tasks = ["my_local_task"]}
[[stages]]
name = "pt"
kind = "pretrain"
[[stages.data]]
path = "corpus.jsonl"
format = "text"
""")
    registry = get_registry()
    assert "lm-eval" in registry.scorers
    plan = make_plan(load_recipe(str(recipe), registry), registry, str(tmp_path / "run"))
    model, tokenizer = loaded
    said = []
    scored = score_benchmarks(plan.benchmarks, model, tokenizer, said.append, "on the starting model")
    builtin, harness = scored["builtin"], scored["harness"]
    assert harness["items"] == 12 and harness["scorer"] == "lm-eval"
    assert harness["items_digest"] == builtin["items_digest"]  # the same items: rows pair
    assert harness["per_item"]["predicted"] == builtin["per_item"]["predicted"]
    assert len(set(builtin["per_item"]["predicted"])) > 1  # the adapter's random weights: not one letter throughout
    mine = scored["mine/my_local_task"]
    assert mine["items"] == 5 and mine["chance"] == pytest.approx(1 / 3) and set(mine["letters"]) == set("ABC")
    assert any(line.startswith("benchmark harness on the starting model (lm-eval): accuracy") for line in said)
