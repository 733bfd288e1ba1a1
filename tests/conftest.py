"""Shared fixtures: throwaway subject plugins, registered in-process.

Core tests use `toy` (made by `tutor plugin new`) instead of the real subjects,
so they test the core's behaviour, not the content of any one plugin.
`subject_package` writes any other subject package (files beside an empty
module, found by convention) and registers it the same way.
"""

import importlib
import sys
import textwrap

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


@pytest.fixture
def subject_package(tmp_path):
    """register(name, {relative path: text}) writes package tutor_<name> with those files and registers it."""
    registered = []

    def register(name: str, files: dict[str, str]):
        package = tmp_path / "site" / f"tutor_{name}"
        for relative, text in {"__init__.py": "", **files}.items():
            (package / relative).parent.mkdir(parents=True, exist_ok=True)
            (package / relative).write_text(textwrap.dedent(text), encoding="utf-8")
        sys.path.insert(0, str(package.parent))
        module = importlib.import_module(f"tutor_{name}")
        plugin_manager().register(module, name=name)
        registered.append((module, str(package.parent)))
        registry.cache_clear()
        return package

    yield register
    for module, path in registered:
        plugin_manager().unregister(module)
        sys.modules.pop(module.__name__, None)
        sys.path.remove(path)
    registry.cache_clear()


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory):
    """A local model folder: a random 2-layer Llama and a 1,000-token BPE trained on the physics bank (see tiny_model.py)."""
    from tiny_model import build_tiny_model

    return build_tiny_model(tmp_path_factory.mktemp("tiny-llama"))


@pytest.fixture(scope="session")
def tiny_smol_model(tmp_path_factory):
    """A tiny random Llama with SmolLM2's own tokenizer: llama.cpp's GGUF converter accepts it (see tiny_model.py)."""
    from tiny_model import build_tiny_smol_model
    from tutor.basemodels import resolve
    from tutor.config import ModelConfig

    return build_tiny_smol_model(tmp_path_factory.mktemp("tiny-smol"), resolve(ModelConfig().base, say=lambda _: None).location)


@pytest.fixture
def clean_teacher_env(monkeypatch):
    """No teacher or API settings from the environment of whoever runs the tests."""
    import os

    for name in list(os.environ):
        if name.startswith(("TUTOR_", "DEEPSEEK_", "OPENAI_")):
            monkeypatch.delenv(name)


@pytest.fixture
def teacher_server():
    """A fresh OpenAI-compatible fake teacher on 127.0.0.1 (tests/openai_server.py), stopped after the test."""
    import openai_server

    with openai_server.TeacherServer() as server:
        yield server
