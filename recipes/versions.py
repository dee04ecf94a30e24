"""The versions of the libraries and plugins that compute a result: part of a stage's fingerprint and
of the record that says a stage's data is prepared. No torch (read from the installed metadata)."""

from __future__ import annotations

from importlib import metadata

LIBRARIES = ("torch", "transformers", "peft", "accelerate", "bitsandbytes", "safetensors", "tokenizers")


def versions(registry) -> dict:
    found = {}
    for name in LIBRARIES:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found.update({f"plugin:{name}": info.version for name, info in registry.info.items()})
    return found
