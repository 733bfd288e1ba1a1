"""Shared fixtures: a throwaway subject plugin, registered in-process.

Core tests use `toy` (made by `tutor plugin new`) instead of the real subjects,
so they test the core's behaviour, not the content of any one plugin.
"""

import importlib
import sys

import pytest

from tutor.plugins import plugin_manager
from tutor.registry import get_subject, registry
from tutor.scaffold import scaffold


@pytest.fixture(scope="session")
def toy_root(tmp_path_factory):
    return scaffold("toy", tmp_path_factory.mktemp("plugins"))


@pytest.fixture
def toy(toy_root):
    sys.path.insert(0, str(toy_root))
    module = importlib.import_module("tutor_toy")
    pm = plugin_manager()
    pm.register(module, name="toy")
    registry.cache_clear()
    yield get_subject("toy")
    pm.unregister(module)
    registry.cache_clear()
    sys.path.remove(str(toy_root))


@pytest.fixture
def toy_bank(toy, tmp_path):
    """A writable copy of the toy's bank folder."""
    import shutil

    target = tmp_path / "bank"
    shutil.copytree(toy.subject.bank, target)
    return target
