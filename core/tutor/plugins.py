"""Finding plugins and calling their hooks: the core's default plugins, then every installed `tutor` entry point.

Loading happens once, on first use, never at import: `tutor --version` and
the CLI's start-up stay fast. A plugin that fails to import is skipped with a
warning naming it, so one broken subject never takes the others down.

Every hook call goes through pluggy (`call`), so `tryfirst`, `trylast` and
wrappers mean what pluggy's documentation says. The call order is fixed: the
core's default plugins first; then plugins registered at run time, newest
first (pluggy calls the last registered first); then installed plugins by
entry-point name. A plugin's `tryfirst` implementations come before the core's,
its `trylast` ones after everything. Each implementation runs in a guard, so
one that raises is skipped for that hook only, with a warning naming it, and
the next one still runs.

A subject package needs no hook code at all: a package with a `subject.toml`
beside its `__init__.py` is a subject by convention (tutor.package).
"""

from __future__ import annotations

import functools
import importlib
import os
import warnings
from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import dataclass
from functools import cache
from importlib.metadata import entry_points, version

import pluggy

from . import hookspecs
from .package import SubjectPackage

DEFAULT_PLUGINS = (
    "tutor.default_plugins.formats",
    "tutor.default_plugins.evaluators",
    "tutor.default_plugins.sources",
    "tutor.default_plugins.rewards",
    "tutor.default_plugins.templates",
)


class PluginWarning(UserWarning):
    """A plugin was skipped because it failed to import or broke the hook contract."""


@dataclass(frozen=True)
class Failure:
    """A plugin that failed: at import (hook 'import') or in one hook."""

    plugin: str
    hook: str
    error: Exception

    @property
    def detail(self) -> str:
        from .errors import ValidationFailed

        if isinstance(self.error, ValidationFailed):
            return "\n  ".join(map(str, self.error.problems))
        return f"{type(self.error).__name__}: {self.error}"


# plugin name -> (distribution, version); filled as plugins register.
DISTRIBUTIONS: dict[str, tuple[str, str]] = {}
# Plugins that failed to import: a command that needs one of them says so, instead of "unknown subject".
IMPORT_FAILURES: list[Failure] = []

_calling: ContextVar[str | None] = ContextVar("tutor_calling_plugin", default=None)
_failures: ContextVar[list[Failure] | None] = ContextVar("tutor_hook_failures", default=None)


def calling() -> str | None:
    """The name of the plugin whose hook implementation is running now (None outside one)."""
    return _calling.get()


def call(hook: str, **kwargs) -> list[Failure]:
    """Call a hook through pluggy; return the implementations that raised (each already warned about)."""
    failures: list[Failure] = []
    token = _failures.set(failures)
    try:
        getattr(plugin_manager().hook, hook)(**kwargs)
    finally:
        _failures.reset(token)
    return failures


class PluginManager(pluggy.PluginManager):
    """pluggy's manager, registering each plugin through a `Guarded` view of it."""

    def register(self, plugin: object, name: str | None = None) -> str | None:
        name = name or self.get_canonical_name(plugin)
        return super().register(Guarded(self, plugin, name), name)

    def unregister(self, plugin: object | None = None, name: str | None = None) -> object | None:
        # Accept the module a caller registered, not only the view pluggy holds.
        view = next((v for v in self.get_plugins() if v is plugin or getattr(v, "plugin", None) is plugin), plugin)
        return super().unregister(view, name)


class Guarded:
    """What pluggy sees of a plugin: its hook implementations, each wrapped in a guard.

    The guard records which plugin is registering (`calling()`), and turns an
    exception into a warning and a Failure, so pluggy goes on to the next
    implementation. Wrappers (`wrapper=True`, `hookwrapper=True`) are passed
    through as they are: they run around the whole call. The core's default
    plugins are made `tryfirst`, which puts them first in the call order.
    """

    def __init__(self, pm: pluggy.PluginManager, plugin: object, name: str):
        self.plugin, self.__name__ = plugin, getattr(plugin, "__name__", name)
        sources = [plugin]
        if package := SubjectPackage.find(plugin):
            sources.insert(0, package)  # the module's own hook of the same name replaces the convention's
        core = name in DEFAULT_PLUGINS
        for source in sources:
            for attr in dir(source):
                opts = pm.parse_hookimpl_opts(source, attr)
                if opts is not None and (source is plugin or source.provides(attr)):
                    function = getattr(source, attr)
                    wrapper = opts.get("wrapper") or opts.get("hookwrapper")
                    setattr(self, attr, function if wrapper else _guard(function, name, opts.get("specname") or attr, core))

    def __repr__(self) -> str:
        return f"<plugin {self.plugin!r}>"


def _guard(function: Callable, plugin: str, hook: str, core: bool) -> Callable:
    @functools.wraps(function)  # keeps the signature, which pluggy reads for the argument names
    def guarded(*args, **kwargs):
        token = _calling.set(plugin)
        try:
            return function(*args, **kwargs)
        except Exception as err:  # noqa: BLE001 - any failure in someone else's code
            failures = _failures.get()
            if failures is None:  # called outside call(): the caller handles it, as pluggy would let it
                raise
            failure = Failure(plugin, hook, err)
            failures.append(failure)
            code = getattr(function, "__func__", function).__code__  # the warning points at the hook, not at pluggy
            message = f"plugin {plugin!r} failed in {hook} and was skipped there:\n  {failure.detail}"
            warnings.warn_explicit(message, PluginWarning, code.co_filename, code.co_firstlineno)
            return None
        finally:
            _calling.reset(token)

    opts = dict(getattr(function, f"{hookspecs.PROJECT}_impl"))
    if core and not opts.get("trylast"):
        opts["tryfirst"] = True
    setattr(guarded, f"{hookspecs.PROJECT}_impl", opts)
    return guarded


@cache
def plugin_manager() -> PluginManager:
    pm = PluginManager(hookspecs.PROJECT)
    pm.add_hookspecs(hookspecs)
    for module in reversed(DEFAULT_PLUGINS):  # reversed: pluggy calls the last registered first
        pm.register(importlib.import_module(module), name=module)
        DISTRIBUTIONS[module] = ("tutor", version("tutor"))
    wanted = _wanted()
    # pluggy calls the plugin registered last first: registering in reverse name order makes
    # the call order (and so template precedence between shared folders) alphabetical, and
    # independent of the order of files on disk.
    for ep in sorted(entry_points(group=hookspecs.PROJECT), key=lambda ep: (ep.name, ep.value), reverse=True):
        dist = ep.dist.name if ep.dist else "?"
        if wanted is not None and not {ep.name, dist} & wanted:
            continue
        name = ep.name if not pm.has_plugin(ep.name) else f"{ep.name} ({dist})"
        try:
            pm.register(ep.load(), name=name)
        except Exception as err:  # noqa: BLE001 - any failure in someone else's code
            IMPORT_FAILURES.append(Failure(name, "import", err))
            warnings.warn(f"plugin {ep.name!r} from {dist} was skipped: {type(err).__name__}: {err}", PluginWarning, stacklevel=2)
            continue
        DISTRIBUTIONS[name] = (dist, ep.dist.version if ep.dist else "?")
    _drop_plugins_with_unknown_hooks(pm)
    return pm


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
