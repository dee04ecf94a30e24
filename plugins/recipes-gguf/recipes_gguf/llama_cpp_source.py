"""Where llama.cpp's converter comes from, and ``recipes-gguf-fetch``, which puts it there.

llama.cpp's ``convert_hf_to_gguf.py`` (with its ``conversion/`` package) is not a package on PyPI;
it ships, with the ``gguf-py`` of the same llama.cpp commit, inside the source distribution of
``llama-cpp-python``. That project publishes no wheel here, and installing it compiles llama.cpp
(more than 10 minutes on 2 cores), so the converter is taken from the sdist without building it:

    pip download --no-deps --no-binary :all: llama-cpp-python==VERSION

(77 MB, checked against the sha256 below), of which only ``vendor/llama.cpp/convert_hf_to_gguf.py``,
``conversion/`` and ``gguf-py/gguf/`` (2 MB) are unpacked, into ``recipes_gguf/llama.cpp/`` beside
this module. PyPI's own ``gguf`` distribution is never used with it: the converter and gguf-py must
come from the same commit (with PyPI's gguf 0.19.0 the converter fails on a constant it lacks, though
both say 0.19.0), so the converter runs in a subprocess with its own gguf-py first on its path, and
the parity gate reads the file with that same gguf-py.

``LLAMA_CPP_DIR`` names another llama.cpp checkout to use instead (one with the converter and
gguf-py, for example a newer one for a newer architecture).
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
from pathlib import Path

from recipes.api import RecipeError, file_sha256

VERSION = "0.3.36"
SDIST = f"llama_cpp_python-{VERSION}.tar.gz"
SDIST_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"
INSIDE = f"llama_cpp_python-{VERSION}/vendor/llama.cpp/"
# What the converter needs from the sdist, as paths under INSIDE
WANTED = ("convert_hf_to_gguf.py", "LICENSE", "conversion/", "gguf-py/gguf/", "gguf-py/LICENSE")
UNPACKED = Path(__file__).resolve().parent / "llama.cpp"
FETCH = "recipes-gguf-fetch"


def is_llama_cpp(folder: Path) -> bool:
    return (folder / "convert_hf_to_gguf.py").is_file() and (folder / "gguf-py" / "gguf" / "__init__.py").is_file()


def llama_cpp_dir() -> Path:
    """The llama.cpp folder to convert with: ``$LLAMA_CPP_DIR``, else the one ``recipes-gguf-fetch`` unpacked."""
    named = os.environ.get("LLAMA_CPP_DIR")
    if named:
        folder = Path(named).expanduser().resolve()
        if not is_llama_cpp(folder):
            raise RecipeError(f"LLAMA_CPP_DIR={named}: no convert_hf_to_gguf.py with gguf-py/ there; point it at a "
                              f"llama.cpp checkout, or unset it and run {FETCH}")
        return folder
    if not is_llama_cpp(UNPACKED):
        raise RecipeError(f"llama.cpp's converter is not installed: run {FETCH} (downloads the llama-cpp-python "
                          f"{VERSION} source distribution from PyPI and unpacks its converter; nothing is compiled), "
                          "or set LLAMA_CPP_DIR to a llama.cpp checkout")
    return UNPACKED


def gguf_env(folder: Path) -> dict:
    """The environment a subprocess reads GGUF files in: that checkout's gguf-py before anything installed."""
    env = dict(os.environ)
    env.pop("NO_LOCAL_GGUF", None)  # the converter would then import an installed gguf instead of its own
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(folder / "gguf-py"), env.get("PYTHONPATH")]))
    return env


def download(into: Path) -> Path:
    """The sdist, through pip (its index, proxy and cache settings), without its dependencies."""
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--no-binary", ":all:",
               f"llama-cpp-python=={VERSION}", "-d", str(into)]
    done = subprocess.run(command, capture_output=True, text=True)
    if done.returncode != 0 or not (into / SDIST).is_file():
        last = (done.stderr.strip().splitlines() or ["no output"])[-1]
        raise RecipeError(f"{' '.join(command)} failed ({last}); download {SDIST} where PyPI is reachable "
                          f"and run {FETCH} --sdist FILE")
    return into / SDIST


def unpack(sdist: Path, target: Path = UNPACKED) -> Path:
    """Check the sdist's sha256, unpack the converter and its gguf-py into ``target`` (replaced whole)."""
    found = file_sha256(sdist)
    if found != SDIST_SHA256:
        raise RecipeError(f"{sdist}: sha256 {found}, not the {SDIST_SHA256} of llama-cpp-python {VERSION}'s "
                          "source distribution on PyPI")
    partial = target.with_name(target.name + ".partial")
    shutil.rmtree(partial, ignore_errors=True)
    with tarfile.open(sdist, "r:gz") as archive:
        members = [m for m in archive.getmembers() if m.isfile() and m.name.startswith(INSIDE)
                   and m.name[len(INSIDE):].startswith(WANTED) and "/tests/" not in m.name]
        for member in members:
            member.name = member.name[len(INSIDE):]
        archive.extractall(partial, members=members, filter="data")
    (partial / "SOURCE").write_text(f"llama-cpp-python {VERSION} sdist {SDIST_SHA256}\n", encoding="utf-8")
    if not is_llama_cpp(partial):
        raise RecipeError(f"{sdist}: no vendor/llama.cpp converter with gguf-py inside")
    shutil.rmtree(target, ignore_errors=True)
    os.rename(partial, target)
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=FETCH, description=f"Unpack llama.cpp's converter and gguf-py from the "
                                     f"llama-cpp-python {VERSION} source distribution (nothing is compiled).")
    parser.add_argument("--sdist", type=Path, help=f"an {SDIST} downloaded already (else pip downloads it)")
    args = parser.parse_args(argv)
    try:
        if args.sdist is not None:
            folder = unpack(args.sdist)
        else:
            with tempfile.TemporaryDirectory() as scratch:
                folder = unpack(download(Path(scratch)))
    except RecipeError as exc:
        for problem in exc.problems:
            print(f"error: {problem}", file=sys.stderr)
        return 2
    print(f"llama.cpp's converter (llama-cpp-python {VERSION}) is in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
