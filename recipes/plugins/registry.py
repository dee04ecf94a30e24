"""Loading plugins: the built-ins first, then every entry point in the group ``recipes.plugins.registry``.

Set ``RECIPES_PLUGINS`` to a comma-separated list of entry-point names to load only those
(an empty value loads none); the built-ins always load. A plugin that fails to import or to register
is an error naming it, never a log line.
"""

from __future__ import annotations

import importlib
import os
from dataclasses import dataclass, field
from importlib import metadata

import pluggy

from recipes.plugins import hookspecs
from recipes.errors import RecipeError
from recipes.plugins.hookspecs import (BenchmarkScorer, CallbackPlugin, DataFormat, DocumentFilter, Exporter,
                                       LossFunction, QuantizationBackend, StageKind)

ENTRY_POINT_GROUP = "recipes.plugins"
BUILTIN_PLUGINS = (
    "recipes.builtin.formats",
    "recipes.builtin.quantization",
    "recipes.builtin.callbacks",
    "recipes.builtin.losses",
    "recipes.builtin.scorers",
    "recipes.builtin.kinds",
    "recipes.builtin.filters",
)


@dataclass
class PluginInfo:
    name: str
    version: str
    source: str  # "built-in" or the distribution that ships it


@dataclass
class Registry:
    """Every provider from every loaded plugin, by name."""

    manager: pluggy.PluginManager
    formats: dict[str, DataFormat] = field(default_factory=dict)
    backends: dict[str, QuantizationBackend] = field(default_factory=dict)
    callbacks: dict[str, CallbackPlugin] = field(default_factory=dict)
    losses: dict[str, LossFunction] = field(default_factory=dict)
    exporters: dict[str, Exporter] = field(default_factory=dict)
    scorers: dict[str, BenchmarkScorer] = field(default_factory=dict)
    families: dict[str, object] = field(default_factory=dict)  # name -> recipes.family.ModelFamily
    kinds: dict[str, StageKind] = field(default_factory=dict)
    filters: dict[str, DocumentFilter] = field(default_factory=dict)
    info: dict[str, PluginInfo] = field(default_factory=dict)

    @property
    def family(self):
        """The installation's model family (``recipes.family``): exactly one plugin provides it."""
        if len(self.families) != 1:
            found = ", ".join(sorted(self.families)) or "none"
            raise RecipeError(f"recipes needs exactly one model family plugin (found: {found}); install "
                              "qwen-recipes, or leave the others out with RECIPES_PLUGINS")
        return next(iter(self.families.values()))

    def hooks_of(self, plugin_name: str) -> list[str]:
        plugin = self.manager.get_plugin(plugin_name)
        return sorted(caller.name for caller in self.manager.get_hookcallers(plugin) or [])

    def provided_by(self, plugin_name: str) -> list[str]:
        """The names of the providers one plugin contributes, as `kind:name`."""
        return [f"{kind}:{provider.name}" for kind, hook_name, _ in TABLES
                for provider in _provided(self.manager, hook_name, plugin_name)]


# (kind, hook, Registry attribute) for each registration hook
TABLES = (
    ("format", "register_data_formats", "formats"),
    ("backend", "register_quantization_backends", "backends"),
    ("callback", "register_callbacks", "callbacks"),
    ("loss", "register_loss_functions", "losses"),
    ("exporter", "register_exporters", "exporters"),
    ("scorer", "register_benchmark_scorers", "scorers"),
    ("family", "register_model_families", "families"),
    ("kind", "register_stage_kinds", "kinds"),
    ("filter", "register_filters", "filters"),
)


def _provided(manager: pluggy.PluginManager, hook_name: str, plugin_name: str) -> list:
    """What one plugin returns from a hook, through pluggy's own call loop restricted to it (so that
    hook wrappers apply as they do to the whole call)."""
    others = [p for name, p in manager.list_name_plugin() if name != plugin_name]
    caller = manager.subset_hook_caller(hook_name, remove_plugins=others)
    return [provider for result in caller() for provider in result or []]


def new_manager() -> pluggy.PluginManager:
    manager = pluggy.PluginManager(hookspecs.PROJECT)
    manager.add_hookspecs(hookspecs)
    return manager


def _register(manager: pluggy.PluginManager, plugin, name: str, what: str) -> None:
    from recipes.plugins.hookspecs import API_VERSION

    required = getattr(plugin, "REQUIRES_RECIPES_API", None)
    if required is not None and (not isinstance(required, int) or required > API_VERSION):
        raise RecipeError(f"plugin {name!r} ({what}) needs version {required!r} of recipes' plugin API; this "
                          f"recipes has version {API_VERSION}: upgrade qwen-recipes, or leave the plugin out "
                          "with RECIPES_PLUGINS")
    try:
        manager.register(plugin, name=name)
    except Exception as exc:  # pluggy raises PluginValidationError, ValueError, ...
        raise RecipeError(f"plugin {name!r} ({what}) could not be registered: {exc}") from exc


def load_entry_points(manager: pluggy.PluginManager, info: dict[str, PluginInfo]) -> None:
    wanted = os.environ.get("RECIPES_PLUGINS")
    allow = None if wanted is None else {w.strip() for w in wanted.split(",") if w.strip()}
    for ep in sorted(metadata.entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name):
        if allow is not None and ep.name not in allow:
            continue
        if manager.has_plugin(ep.name):
            continue
        try:
            plugin = ep.load()
        except Exception as exc:
            raise RecipeError(
                f"plugin {ep.name!r} (entry point {ep.value!r} in group {ENTRY_POINT_GROUP!r}) failed "
                f"to load: {type(exc).__name__}: {exc}. Fix or uninstall it, or leave it out with "
                f"RECIPES_PLUGINS") from exc
        _register(manager, plugin, ep.name, f"entry point {ep.value!r}")
        dist = getattr(ep, "dist", None)
        info[ep.name] = PluginInfo(ep.name, dist.version if dist else "?", dist.name if dist else "?")


WHAT = {"format": "data format", "backend": "quantization backend", "callback": "callback",
        "loss": "loss function", "exporter": "export format", "scorer": "benchmark scorer", "family": "model family",
        "kind": "stage kind", "filter": "document filter"}


def build_registry(manager: pluggy.PluginManager, info: dict[str, PluginInfo]) -> Registry:
    """Call every registration hook through pluggy's call loop (``manager.hook.<name>()``, so that
    wrappers and tryfirst/trylast ordering work) and index the providers by name."""
    registry = Registry(manager=manager, info=info)
    for kind, hook_name, attribute in TABLES:
        table = getattr(registry, attribute)
        try:
            results = getattr(manager.hook, hook_name)()
        except Exception as exc:
            raise RecipeError(f"plugin {_failing(manager, hook_name)!r} failed in {hook_name}: "
                              f"{type(exc).__name__}: {exc}") from exc
        for provider in (p for result in results for p in result or []):
            if provider.name in table:
                owners = [name for name, _ in manager.list_name_plugin()
                          if any(p.name == provider.name for p in _provided(manager, hook_name, name))]
                raise RecipeError(
                    f"{WHAT[kind]} {provider.name!r} is provided by two plugins: "
                    f"{' and '.join(repr(o) for o in owners)}; uninstall one or leave it out with RECIPES_PLUGINS")
            table[provider.name] = provider
    return registry


def _failing(manager: pluggy.PluginManager, hook_name: str) -> str:
    """The plugin whose implementation of a hook raises (called one by one, on the error path only)."""
    for impl in getattr(manager.hook, hook_name).get_hookimpls():
        try:
            impl.function()
        except Exception:
            return impl.plugin_name
    return "?"


_cached: Registry | None = None


def chat_kind(kind: str) -> bool:
    """Whether a stage of ``kind`` trains on chat-templated data (``StageKind.chat``): its samples are
    answered as chat and its merged model ends turns with the family's turn end. A kind no loaded
    plugin provides (a run folder read without its plugin) counts as chat unless it is ``pretrain``."""
    provider = get_registry().kinds.get(kind)
    return provider.chat if provider is not None else kind != "pretrain"


def get_registry(extra_plugins: tuple = ()) -> Registry:
    """The registry of built-in and installed plugins (built once per process).

    ``extra_plugins``: plugin objects to register too (for embedding and tests); a call with
    extras builds a fresh registry and does not cache it."""
    global _cached
    if _cached is not None and not extra_plugins:
        return _cached
    from recipes import __version__

    manager = new_manager()
    info: dict[str, PluginInfo] = {}
    for module_name in BUILTIN_PLUGINS:
        _register(manager, importlib.import_module(module_name), module_name, "built-in")
        info[module_name] = PluginInfo(module_name, __version__, "built-in")
    load_entry_points(manager, info)
    for plugin in extra_plugins:
        name = getattr(plugin, "__name__", None) or type(plugin).__name__
        _register(manager, plugin, name, "registered by the caller")
        info[name] = PluginInfo(name, "-", "registered by the caller")
    registry = build_registry(manager, info)
    if not extra_plugins:
        _cached = registry
    return registry

