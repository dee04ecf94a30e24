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


def provider_version(function) -> str:
    """The version of the distribution that provides a plugin's function (its top-level package)."""
    from importlib import metadata

    from recipes import __version__

    package = (getattr(function, "__module__", None) or "").split(".")[0]
    if package == "recipes":
        return f"recipes {__version__}"
    for name in metadata.packages_distributions().get(package, []):
        try:
            return f"{name} {metadata.version(name)}"
        except metadata.PackageNotFoundError:  # pragma: no cover
            continue
    return f"{package} (no distribution)"
