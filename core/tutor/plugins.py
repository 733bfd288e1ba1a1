"""Finding plugins: the core's default plugins, then every installed `tutor` entry point.

Loading happens once, on first use, never at import: `tutor --version` and
the CLI's start-up stay fast. A plugin that fails to import is skipped with a
warning naming it, so one broken subject never takes the others down.
"""

from __future__ import annotations

import importlib
import os
import warnings
from functools import cache
from importlib.metadata import entry_points, version

import pluggy

from . import hookspecs

DEFAULT_PLUGINS = (
    "tutor.default_plugins.formats",
    "tutor.default_plugins.evaluators",
    "tutor.default_plugins.sources",
    "tutor.default_plugins.rewards",
    "tutor.default_plugins.templates",
)


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or broke the hook contract."""


@cache
def plugin_manager() -> pluggy.PluginManager:
    pm = pluggy.PluginManager("tutor")
    pm.add_hookspecs(hookspecs)
    for module in DEFAULT_PLUGINS:
        pm.register(importlib.import_module(module), name=module)
        DISTRIBUTIONS[module] = ("tutor", version("tutor"))
    wanted = _wanted()
    # Sorted, so that load order (and so template precedence between shared
    # folders) does not depend on the order of files on disk.
    for ep in sorted(entry_points(group="tutor"), key=lambda ep: (ep.name, ep.value)):
        dist = ep.dist.name if ep.dist else "?"
        if wanted is not None and not {ep.name, dist} & wanted:
            continue
        name = ep.name if not pm.has_plugin(ep.name) else f"{ep.name} ({dist})"
        try:
            pm.register(ep.load(), name=name)
        except Exception as err:  # noqa: BLE001 - any failure in someone else's code
            warnings.warn(f"plugin {ep.name!r} from {dist} was skipped: {type(err).__name__}: {err}", PluginWarning, stacklevel=2)
            continue
        DISTRIBUTIONS[name] = (dist, ep.dist.version if ep.dist else "?")
    _drop_plugins_with_unknown_hooks(pm)
    return pm


# plugin name -> (distribution, version); filled as plugins register.
DISTRIBUTIONS: dict[str, tuple[str, str]] = {}


def _wanted() -> set[str] | None:
    """TUTOR_LOAD_PLUGINS=physics,tutor-economics loads only those (entry or distribution names)."""
    value = os.environ.get("TUTOR_LOAD_PLUGINS")
    if value is None:
        return None
    return {name.strip() for name in value.split(",") if name.strip()}


def _drop_plugins_with_unknown_hooks(pm: pluggy.PluginManager) -> None:
    # A misspelt hook (register_subject) would otherwise be silently ignored.
    while True:
        try:
            pm.check_pending()
            return
        except pluggy.PluginValidationError as err:
            name = pm.get_name(err.plugin)
            warnings.warn(f"plugin {name!r} was skipped: {err}", PluginWarning, stacklevel=3)
            pm.unregister(err.plugin)
