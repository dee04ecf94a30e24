"""Do two versions of recipes prepare the same tokens? Every bundled recipe's stores, by content.

    python bench/same_stores.py --before DIR     # DIR: a checkout of the other version's source tree
                                                 # (e.g. git worktree add DIR main, or git archive)

Each bundled recipe (qwen_recipes/recipes/*.toml) is prepared with ``recipes prepare`` by the other
version (``PYTHONPATH=DIR``) and by this one, each into its own cache folder; this one prepares twice,
the second time into a fresh store with the tokenizer it kept from the first (the path a preparation
of documents takes once transformers has built the model's tokenizer). A recipe whose model is a hub
id is prepared with the bundled tiny model's folder instead (the genuine Qwen tokenizer; no weights
are downloaded); one that both versions refuse on that model is named and not compared. Every
``.npy`` array of every store must be equal, store by store (the store key may change; it is
reported when it does). Prints one line per recipe and store; exits 1 on a difference.
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def prepare(recipe: Path, cache: Path, pythonpath: str | None) -> str:
    env = {**os.environ, "RECIPES_CACHE": str(cache), "HF_HUB_OFFLINE": "1"}
    if pythonpath:
        env["PYTHONPATH"] = pythonpath
    done = subprocess.run([sys.executable, "-m", "recipes", "prepare", str(recipe)], env=env, capture_output=True,
                          text=True, cwd=pythonpath or ROOT)
    if done.returncode != 0:
        raise Refused((done.stdout + done.stderr).strip().splitlines()[-1])
    return done.stdout


class Refused(Exception):
    """``recipes prepare`` refused the recipe (its last line)."""


def stores(cache: Path) -> dict[str, dict[str, np.ndarray]]:
    """Per store folder (by key): its arrays, by file name."""
    found = {}
    for marker in sorted((cache / "store").glob("*/store.json")):
        found[marker.parent.name] = {p.name: np.load(p) for p in sorted(marker.parent.glob("shard-*.npy"))}
    return found


def same(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(np.array_equal(a[name], b[name]) for name in a)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True)
    args = parser.parse_args()
    from qwen_recipes.tiny import tiny_qwen2_path

    tiny = str(tiny_qwen2_path())
    work = Path(tempfile.mkdtemp(prefix="same_stores-"))
    failed = False
    for source in sorted((ROOT / "qwen_recipes" / "recipes").glob("*.toml")):
        text = re.sub(r'(?m)^path = "Qwen/[^"]+"', f'path = "{tiny}"', source.read_text())
        recipe = work / source.name
        recipe.write_text(text)
        before, after, again = (work / f"{source.stem}-{n}" for n in ("before", "after", "again"))
        try:
            prepare(recipe, before, str(args.before.resolve()))
        except Refused as refused:  # e.g. a Qwen-7B v1 recipe on the Qwen2 tiny model: v1's LoRA targets
            try:
                prepare(recipe, after, None)
            except Refused as again:
                if str(again) == str(refused):
                    print(f"{source.name}: not compared, both versions refuse it: {refused}")
                    continue
            print(f"{source.name}: refused before ({refused}), not now")
            failed = True
            continue
        prepare(recipe, after, None)
        (again / "store").mkdir(parents=True)  # a fresh store, the tokenizer kept by the first preparation
        if (after / "tokenizers").is_dir():
            os.rename(after / "tokenizers", again / "tokenizers")
        prepare(recipe, again, None)
        old, new, newer = stores(before), stores(after), stores(again)
        if not old or len(old) != len(new) or len(new) != len(newer):
            print(f"{source.name}: {len(old)} stores before, {len(new)} and {len(newer)} after")
            failed = True
            continue
        for (key, a), (key2, b), (key3, c) in zip(old.items(), new.items(), newer.items()):
            equal = same(a, b) and same(b, c)
            tokens = sum(v.size for n, v in a.items() if n.endswith(".ids.npy"))
            keys = "same key" if key == key2 == key3 else f"keys {key[:12]} / {key2[:12]} / {key3[:12]}"
            print(f"{source.name}: store {key[:12]}: {len(a)} arrays, {tokens:,} tokens: "
                  f"{'identical' if equal else 'DIFFERENT'} ({keys})", flush=True)
            failed |= not equal
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
