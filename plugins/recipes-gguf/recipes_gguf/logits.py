"""Next-token logits of the GGUF file (llama-cpp-python) against the merged HF model (transformers),
on a few prompts: the check that the file also *runs* like the model, beyond its weights matching.

Runs as ``python -m recipes_gguf.logits GGUF HF_FOLDER`` (llama.cpp can crash the process rather than
raise), printing one JSON object per prompt: the largest logit difference relative to the spread
(standard deviation) of the HF logits, and whether both pick the same next token. ``check`` is the
caller's side. The allowed relative difference per type (``TOLERANCE``) is loose: a wrong file (a
tensor transposed, another template, a lost bias) moves the logits by about their spread.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from recipes.api import RecipeError

PROMPTS = ("The honey bee", "<|im_start|>user\nHow do bees survive the winter?<|im_end|>\n<|im_start|>assistant\n",
           "def fibonacci(n):")
TOLERANCE = {"f16": 0.05, "bf16": 0.1, "q8_0": 0.2, "q5_k_m": 0.5, "q4_k_m": 0.7}


def compare(gguf_path: Path, folder: Path) -> list[dict]:
    import llama_cpp
    import numpy as np
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(folder)
    model = AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32).eval()
    llm = llama_cpp.Llama(str(gguf_path), n_ctx=256, logits_all=False, verbose=False)
    out = []
    for prompt in PROMPTS:
        ids = tokenizer(prompt)["input_ids"]
        with torch.no_grad():
            hf = model(input_ids=torch.tensor([ids])).logits[0, -1].numpy()
        llm.reset()
        llm.eval(ids)
        ours = np.array(llm.scores[llm.n_tokens - 1][: hf.shape[0]], dtype=np.float32)
        out.append({"prompt": prompt, "relative": float(np.abs(ours - hf).max() / (hf.std() or 1.0)),
                    "same_token": int(ours.argmax()) == int(hf.argmax())})
    return out


def check(gguf_path: Path, folder: Path, variant: str) -> str:
    done = subprocess.run([sys.executable, "-m", "recipes_gguf.logits", str(gguf_path), str(folder)],
                          capture_output=True, text=True)
    try:
        rows = json.loads(done.stdout.strip().splitlines()[-1])
    except (IndexError, ValueError):
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RecipeError(f"llama-cpp-python could not run {gguf_path.name} (exit {done.returncode}): {last}") from None
    worst = max(row["relative"] for row in rows)
    if worst > TOLERANCE[variant]:
        raise RecipeError(f"parity gate failed: {gguf_path.name} run by llama-cpp-python gives next-token logits "
                          f"{worst:.3f} standard deviations from the merged model's ({TOLERANCE[variant]} allowed for "
                          f"{variant}) on {len(rows)} prompts")
    same = sum(row["same_token"] for row in rows)
    return (f"parity gate passed: next-token logits of {len(rows)} prompts in llama-cpp-python within {worst:.3f} "
            f"standard deviations of the merged model's ({TOLERANCE[variant]} allowed); same next token on {same}")


if __name__ == "__main__":
    print(json.dumps(compare(Path(sys.argv[1]), Path(sys.argv[2]))))
