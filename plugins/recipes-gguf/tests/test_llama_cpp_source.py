"""Where the converter comes from: the unpacked llama-cpp-python sdist (what `recipes-gguf-fetch` made),
a file that is not that sdist refused by its sha256, and the plugin found by its entry point."""

from __future__ import annotations

import tarfile

import pytest
from click.testing import CliRunner

from recipes.api import RecipeError
from recipes.cli import main as main_cli
from recipes.plugins.registry import get_registry
from recipes_gguf import llama_cpp_source
from recipes_gguf.llama_cpp_source import UNPACKED, VERSION, llama_cpp_dir, main, unpack

# no conftest.py here: run beside the host's tests, a second module named conftest would shadow theirs


def test_the_exporter_is_loaded_from_its_entry_point():
    registry = get_registry()
    assert registry.info["gguf"].source == "recipes-gguf"
    assert registry.exporters["gguf"].variants == ("q8_0", "f16", "bf16", "q4_k_m", "q5_k_m")
    result = CliRunner().invoke(main_cli, ["plugins"])
    assert result.exit_code == 0, result.output
    assert "gguf 0.1.0 (recipes-gguf)" in result.output and "  hooks: register_exporters" in result.output
    assert "exporter:gguf: one GGUF file for llama.cpp, Ollama and LM Studio" in result.output


def test_the_unpacked_converter_is_the_pinned_sdists(monkeypatch):
    monkeypatch.delenv("LLAMA_CPP_DIR", raising=False)
    assert llama_cpp_dir() == UNPACKED
    assert (UNPACKED / "SOURCE").read_text() == f"llama-cpp-python {VERSION} sdist {llama_cpp_source.SDIST_SHA256}\n"
    assert (UNPACKED / "conversion" / "qwen.py").is_file() and not (UNPACKED / "gguf-py" / "tests").exists()


def test_another_file_is_refused_by_its_sha256(tmp_path, capsys):
    fake = tmp_path / llama_cpp_source.SDIST
    with tarfile.open(fake, "w:gz") as archive:
        archive.add(__file__, arcname=llama_cpp_source.INSIDE + "convert_hf_to_gguf.py")
    with pytest.raises(RecipeError, match=f"{fake}: sha256 [0-9a-f]{{64}}, not the {llama_cpp_source.SDIST_SHA256}"):
        unpack(fake, tmp_path / "llama.cpp")
    assert not (tmp_path / "llama.cpp").exists()
    assert main(["--sdist", str(fake)]) == 2
    assert capsys.readouterr().err.startswith(f"error: {fake}: sha256 ")
