"""`tutor run`: the whole pipeline as one command that does only the work whose inputs changed.

The stages are one table, STAGES; a new stage is one line there. Each stage
names the digests of everything it reads (`inputs`: bank files, config
sections, templates, upstream outputs, the code's version) and records them,
with its status and figures, in <workspace>/<subject>/run.json. A stage runs
when that record is missing, failed or interrupted, when the digest of its
inputs changed, when its output is gone from disk, or when --force names it.
Otherwise it is skipped, and the plan says why. Inputs are read just before a
stage runs, after its upstream stages have run, so a stage whose upstream
re-ran with the same result is still skipped.

Stages resume with their own machinery: teach replays its response log, train
continues the interrupted run from its last checkpoint. A run reads
tutor.toml once (Workspace.pinned): an edit made meanwhile is the next run's.
One `tutor run` works on a workspace at a time (.run.lock holds its pid; the
lock dies with its process, so a stale one is simply taken over).

With several subjects, the stages that need no model (collect, teach,
diagrams) of every subject start at once in the background, while the
stages that load a model (kb on, one subject at a time) run in the
foreground, in order. A failing subject never stops the others.

Kept free of heavy imports: the CLI reads STAGE_NAMES to build its options.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import os
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import Future
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from .errors import TutorError

if TYPE_CHECKING:
    from .registry import SubjectKit
    from .workspace import Workspace


class StageSkipped(Exception):
    """Raised by a stage's inputs() when it has nothing to do here; the message says why."""


@dataclass
class Done:
    """What a stage that ran reports: its figures (for the summary) and its outputs (what later stages read)."""

    figures: dict[str, Any] = field(default_factory=dict)
    outputs: dict[str, Any] = field(default_factory=dict)


@dataclass
class Context:
    kit: SubjectKit
    workspace: Workspace  # pinned: tutor.toml as it was when the run started
    record: dict[str, Any]
    say: Callable[[str], None]
    foreground: bool = True  # False in a background thread: no progress bars (one live display at a time)

    def output(self, stage: str) -> dict[str, Any]:
        """What an upstream stage last produced (its outputs in run.json), {} if it never ran."""
        entry = self.record.get("stages", {}).get(stage, {})
        return entry.get("outputs", {}) if entry.get("status") == "done" else {}

    def progress(self, total: int | None, label: str):
        from .console import progress

        return progress(total, label) if self.foreground else _Silent()


class _Silent:
    def __enter__(self):
        return lambda *_, **__: None

    def __exit__(self, *exc):
        return False


@dataclass(frozen=True)
class Stage:
    name: str
    does: str
    inputs: Callable[[Context], dict[str, Any]]  # raises StageSkipped when the stage has nothing to do
    run: Callable[[Context], Done]
    after: tuple[str, ...] = ()  # the stages whose outputs it reads: when one re-runs, this one is decided afresh
    check: Callable[[Context], None] | None = None  # a misconfiguration, as one line, before any stage starts
    missing: Callable[[Context, dict], str | None] | None = None  # its recorded output, if gone from disk
    needs: tuple[str, ...] = ()  # modules it imports; without them the stage is "not available"
    extra: str = ""  # the pip extra that brings them
    uses_model: bool = False  # runs one subject at a time, in the foreground


# --- digests ----------------------------------------------------------------------------------


def digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, ensure_ascii=False, default=str).encode()).hexdigest()[:16]


def file_digest(path: Path) -> str:
    """A file's content digest ('absent' when there is none), read in blocks: banks can be large."""
    try:
        with open(path, "rb") as handle:
            h = hashlib.sha256()
            for block in iter(lambda: handle.read(1 << 20), b""):
                h.update(block)
            return h.hexdigest()[:16]
    except FileNotFoundError:
        return "absent"


def folder_digest(folders: list[Path]) -> str:
    h = hashlib.sha256()
    for folder in folders:
        for path in sorted(p for p in Path(folder).rglob("*") if p.is_file() and "__pycache__" not in p.parts):
            h.update(f"{path.relative_to(folder)}\0{file_digest(path)}\0".encode())
    return h.hexdigest()[:16]


def code_version(kit: SubjectKit) -> str:
    from importlib.metadata import PackageNotFoundError, version

    from . import __version__

    try:
        plugin = version(kit.distribution)
    except (PackageNotFoundError, ValueError):
        plugin = "unknown"
    return f"tutor {__version__}, {kit.distribution} {plugin}"


def templates_digest(ctx: Context) -> str:
    from .prompts import core_templates_dir, search_path

    return folder_digest([*search_path(ctx.kit, ctx.workspace.template_dirs(ctx.kit.name)), core_templates_dir()])


# --- the stages -------------------------------------------------------------------------------


def _stored(ctx: Context, path: Path) -> str:
    """A path as run.json keeps it: relative to the workspace when inside it, so a workspace can be moved or copied whole."""
    try:
        return str(Path(path).resolve().relative_to(ctx.workspace.root.resolve()))
    except ValueError:
        return str(path)


def _found(ctx: Context, stored: str | None) -> Path | None:
    return None if not stored else ctx.workspace.root / stored


def _resolve(ctx: Context, path: Path) -> Path:
    """Paths in tutor.toml are relative to its folder, the workspace."""
    return path if path.is_absolute() else ctx.workspace.root / path


def _sources(ctx: Context):
    return ctx.workspace.config().collect.get(ctx.kit.name)


def collect_inputs(ctx: Context) -> dict[str, Any]:
    sources = _sources(ctx)
    if sources is None or not (sources.imports or sources.sites):
        raise StageSkipped(f"no sources: add [collect.{ctx.kit.name}] imports or sites to tutor.toml")
    files = [i.file for i in sources.imports] + [i.mapping for i in sources.imports if i.mapping] + list(sources.sites)
    return {"sources": digest(sources.model_dump(mode="json")), "files": {str(f): file_digest(_resolve(ctx, f)) for f in files},
            "code": code_version(ctx.kit)}


def collect_check(ctx: Context) -> None:
    from .errors import UnknownName
    from .registry import registry
    from .scrape import SiteConfig

    sources, known = _sources(ctx), registry().sources
    if sources is None:
        return
    where = f"[collect.{ctx.kit.name}]"
    for item in sources.imports:
        for path in [item.file, *([item.mapping] if item.mapping else [])]:
            if not _resolve(ctx, path).is_file():
                raise TutorError(f"{where} imports: {path}: no such file (paths are relative to {ctx.workspace.root})")
        if item.source and item.source not in known:
            raise UnknownName("question source", item.source, list(known))
        _mapping(ctx, item)
    for site in sources.sites:
        if not _resolve(ctx, site).is_file():
            raise TutorError(f"{where} sites: {site}: no such file (paths are relative to {ctx.workspace.root})")
        config = SiteConfig.load(_resolve(ctx, site))
        if config.adapter not in known:
            raise UnknownName("question source", config.adapter, list(known))


def _mapping(ctx: Context, item):
    from .collect import Mapping

    return Mapping.build(_resolve(ctx, item.mapping) if item.mapping else None, [f"{k}={v}" for k, v in item.columns.items()],
                         [f"{k}={v}" for k, v in item.defaults.items()])


def collect_run(ctx: Context) -> Done:
    from .collect import import_file, scrape_site

    sources, bank = _sources(ctx), ctx.workspace.bank_dir(ctx.kit.name)
    totals = {"read": 0, "imported": 0, "duplicate": 0, "rejected": 0}
    reports = []
    for item in sources.imports:
        with ctx.progress(None, f"importing {item.file.name}") as advance:
            reports.append(import_file(ctx.kit, bank, _resolve(ctx, item.file), _mapping(ctx, item), source=item.source,
                                       encoding=item.encoding, delimiter=item.delimiter, near_threshold=item.near, progress=advance))
    for site in sources.sites:
        with ctx.progress(None, f"scraping {site.stem}") as advance:
            reports.append(scrape_site(ctx.kit, bank, lambda name: ctx.workspace.scrape_dir(ctx.kit.name, name), _resolve(ctx, site),
                                       progress=advance))
    for report in reports:
        for name in totals:
            totals[name] += getattr(report, name)
    return Done(totals, {"questions": file_digest(bank / "questions.jsonl")})


def teacher_configured(workspace: Workspace) -> bool:
    """A [teacher] section in tutor.toml, or TUTOR_TEACHER_* variables: without either, the bank's own gold answers are used."""
    return "teacher" in workspace.config().model_fields_set or any(name.startswith("TUTOR_TEACHER_") for name in os.environ)


def _workspace_questions(ctx: Context) -> Path:
    return ctx.workspace.bank_dir(ctx.kit.name) / "questions.jsonl"


def _teacher_identity(ctx: Context) -> dict[str, Any]:
    from .teach import teacher_config

    cfg = teacher_config(ctx.workspace)
    return {k: getattr(cfg, k) for k in ("base_url", "model", "temperature", "max_tokens")}


def teach_inputs(ctx: Context) -> dict[str, Any]:
    if not teacher_configured(ctx.workspace):
        raise StageSkipped("no teacher configured ([teacher] in tutor.toml): the bank's own gold answers are used")
    if not _workspace_questions(ctx).is_file():
        raise StageSkipped("the workspace has no bank of its own (collect brings one): the sample bank's gold answers are used")
    return {"questions": file_digest(_workspace_questions(ctx)), "teacher": _teacher_identity(ctx), "templates": templates_digest(ctx),
            "code": code_version(ctx.kit)}


def teach_check(ctx: Context) -> None:
    if teacher_configured(ctx.workspace):
        from .llm_client import api_key
        from .teach import teacher_config

        api_key(teacher_config(ctx.workspace))


def _teach(ctx: Context, label: str, work, run) -> None:
    """Run one of teach's jobs with a bar (tokens and cost beside it), and fail as `tutor teach` does when items are left."""
    from .console import cost_progress
    from .teach import run_sync

    with cost_progress(label, silent=not ctx.foreground) as report:
        run_sync(lambda: work(report), run)
    left = run.total - run.done
    if run.stopped:
        raise TutorError(f"stopped: {run.stopped}; {left} left for the next run")
    if run.failed:
        raise TutorError(f"{run.failed} got no reply in time; `tutor run` again retries them")


def teach_run(ctx: Context) -> Done:
    from . import teach as t
    from .llm_client import api_key

    cfg = t.teacher_config(ctx.workspace)
    key, run = api_key(cfg), t.AnswerRun()
    _teach(ctx, f"answers by {cfg.model}", lambda report: t.teach_answers(ctx.kit, ctx.workspace, cfg, key, run, progress=report), run)
    answers = ctx.workspace.bank_dir(ctx.kit.name) / t.ANSWERS
    figures = {"asked": run.total, "answered": run.answered, "rejected": run.rejected, "answered before": run.answered_before,
               "tokens": run.usage.tokens, "cost": f"${run.usage.cost:.2f}"}
    return Done(figures, {"answers": file_digest(answers)})


def _bank(ctx: Context):
    from .dataset import choose_bank

    return choose_bank(ctx.kit, ctx.workspace)


def _requests(ctx: Context, bank) -> tuple[list, int]:
    from .diagrams import extract_requests

    return extract_requests(ctx.kit, bank.answers, bank.questions)


def _teach_diagrams_here(ctx: Context, where: Path) -> bool:
    """The teacher draws only into the workspace's own bank, never into a plugin's sample bank."""
    return teacher_configured(ctx.workspace) and where == ctx.workspace.bank_dir(ctx.kit.name).resolve()


def diagrams_inputs(ctx: Context) -> dict[str, Any]:
    from .bank import DIAGRAMS
    from .jsonl import dumps

    bank, _, where = _bank(ctx)
    requests, _ = _requests(ctx, bank)
    if not requests and not bank.diagrams:
        raise StageSkipped("nothing to draw: the gold answers have no (DIAGRAM: ...) markers and the bank no diagrams")
    return {"requests": digest([dumps(r) for r in requests]), "diagrams": file_digest(where / DIAGRAMS),
            "diagrams config": ctx.workspace.config().diagrams.model_dump(mode="json"),
            "teacher": _teacher_identity(ctx) if _teach_diagrams_here(ctx, where) else None, "code": code_version(ctx.kit)}


def diagrams_run(ctx: Context) -> Done:
    from .bank import DIAGRAMS
    from .diagrams import renderer_for, require_format
    from .jsonl import write_jsonl

    bank, _, where = _bank(ctx)
    requests, markers = _requests(ctx, bank)
    write_jsonl(ctx.workspace.diagram_requests(ctx.kit.name), requests)
    figures: dict[str, Any] = {"markers": markers, "requests": len(requests)}
    if requests and _teach_diagrams_here(ctx, where):
        from . import teach as t
        from .llm_client import api_key

        cfg = t.teacher_config(ctx.workspace)
        key, run = api_key(cfg), t.DiagramRun()
        _teach(ctx, f"diagrams by {cfg.model}",
               lambda report: t.teach_diagrams(ctx.kit, ctx.workspace, cfg, key, run, progress=report), run)
        figures["taught"] = run.compiled
        bank, _, where = _bank(ctx)
    formats = {d.format: ctx.kit.format(d.format) for d in bank.diagrams}
    for fmt in formats.values():
        require_format(fmt)
    with ctx.progress(len(bank.diagrams), f"compiling {ctx.kit.name} diagrams") as advance:
        results = renderer_for(ctx.workspace).render_many([(formats[d.format], d.code, False) for d in bank.diagrams],
                                                          progress=lambda _: advance())
    compiled = sum(r.ok for r in results)
    for diagram, result in [(d, r) for d, r in zip(bank.diagrams, results) if not r.ok][:5]:
        ctx.say(f"did not compile: {diagram.description[:70]}: {result.error}")
    figures.update(diagrams=len(results), compiled=f"{compiled}/{len(results)} ({compiled / len(results):.0%})" if results else "-")
    return Done(figures, {"diagrams": file_digest(where / DIAGRAMS), "compiled": compiled})


def kb_inputs(ctx: Context) -> dict[str, Any]:
    from .bank import ANSWERS, QUESTIONS
    from .kb import KEYWORDS, kb_dir
    from .kb.embed import MODEL_ID

    _, _, where = _bank(ctx)
    notes, docs = ctx.kit.subject.notes, kb_dir(ctx.workspace, ctx.kit.name) / "docs"
    if notes is None and not docs.is_dir():
        raise StageSkipped("nothing to index: the subject ships no notes/ and `tutor kb add` has added no documents")
    config = ctx.workspace.config()
    return {**{f"bank {name}": file_digest(where / name) for name in (QUESTIONS, ANSWERS)},
            "split": {k: getattr(config.train, k) for k in ("seed", "validation", "test")},
            "notes": folder_digest([notes]) if notes else None, "documents": folder_digest([docs]) if docs.is_dir() else None,
            "kb config": config.kb.model_dump(mode="json"), "index": [MODEL_ID, KEYWORDS], "code": code_version(ctx.kit)}


def kb_run(ctx: Context) -> Done:
    from .kb import KnowledgeBase

    base = KnowledgeBase(ctx.workspace, ctx.kit.name, ctx.say)
    with ctx.progress(None, f"indexing {ctx.kit.name}") as advance:
        built = base.build(ctx.kit, progress=advance)
    for line in built.problems:
        ctx.say(f"skipped: {line}")
    for line in built.warnings:
        ctx.say(f"warning: {line}")
    figures = {"chunks": built.chunks, **built.per_kind, "embedded": built.added, "removed": built.removed}
    return Done(figures, {"manifest": file_digest(base.folder / "manifest.json")})


def kb_missing(ctx: Context, outputs: dict) -> str | None:
    from .kb import MANIFEST, kb_dir

    manifest = kb_dir(ctx.workspace, ctx.kit.name) / MANIFEST
    return None if manifest.is_file() else str(manifest.parent)


DATASET_FIELDS = ("seed", "validation", "test", "identity_ratio", "identity_name", "identity_maker", "max_length", "rag")


def dataset_inputs(ctx: Context) -> dict[str, Any]:
    from .bank import ANSWERS, DIAGRAMS, QUESTIONS

    _, label, where = _bank(ctx)
    config = ctx.workspace.config()
    return {"bank": _stored(ctx, where), **{f"bank {name}": file_digest(where / name) for name in (QUESTIONS, ANSWERS, DIAGRAMS)},
            "split": {k: getattr(config.train, k) for k in DATASET_FIELDS}, "tokenizer": config.model.base,
            "templates": templates_digest(ctx), "code": code_version(ctx.kit),
            "knowledge base": _kb_digest(ctx) if config.train.rag else None}


def _kb_digest(ctx: Context) -> str:
    """What [train] rag puts into the prompts depends on the knowledge base: its manifest changes when its chunks do."""
    from .kb import MANIFEST, kb_dir

    return file_digest(kb_dir(ctx.workspace, ctx.kit.name) / MANIFEST)


def dataset_run(ctx: Context) -> Done:
    from . import dataset as ds

    config = ctx.workspace.config()
    from .kb import retriever

    material = retriever(ctx.kit, ctx.workspace, ctx.say) if config.train.rag else None
    built = ds.build_roles(ctx.kit, ctx.workspace, ds.ROLES, config.train, base=config.model.base, say=ctx.say, material=material)
    figures = {b.role: "/".join(str(len(b.splits[s])) for s in ("train", "validation", "test")) + " train/validation/test"
               for b in built}
    return Done(figures, {b.role: b.fingerprint for b in built})


def dataset_missing(ctx: Context, outputs: dict) -> str | None:
    from .dataset import META

    for role, fingerprint in outputs.items():
        meta = ctx.workspace.dataset_dir(ctx.kit.name, role) / META
        try:
            if json.loads(meta.read_text(encoding="utf-8")).get("fingerprint") != fingerprint:
                return f"{meta.parent} was rebuilt by hand"
        except (OSError, ValueError):
            return str(meta.parent)
    return None


def _train_settings(ctx: Context):
    from .train import settings_for

    return settings_for(ctx.kit, ctx.workspace.config().train)


def train_inputs(ctx: Context) -> dict[str, Any]:
    settings = _train_settings(ctx)
    datasets = ctx.output("dataset")
    return {"datasets": {role: datasets.get(role) for role in settings.roles}, "settings": settings.model_dump(mode="json"),
            "base": ctx.workspace.config().model.base, "code": code_version(ctx.kit)}


def train_check(ctx: Context) -> None:
    _train_settings(ctx)  # a bad [train] value is one line now, not after the datasets are built


def train_run(ctx: Context) -> Done:
    from .train import sft

    settings = _train_settings(ctx)
    figures: dict[str, Any] = {}
    outputs: dict[str, Any] = {}
    datasets = ctx.output("dataset")
    for role in settings.roles:
        if not datasets.get(role):
            raise TutorError(f"no {role} dataset was built (the bank has no {'diagrams' if role == 'diagram' else 'gold answers'}): "
                             f"take {role} out of [train] roles")
        resume = _resumable(ctx, role, settings, datasets[role])
        if resume:
            ctx.say(f"{role}: the interrupted run {resume.name} continues from its last checkpoint")
        result = sft(ctx.kit, ctx.workspace, role, settings, base=ctx.workspace.config().model.base, resume=resume is not None,
                     say=ctx.say)
        m = result.meta["metrics"]
        loss = f"validation loss {m['eval_loss_before']} -> {m['eval_loss_after']}, " if m.get("eval_loss_after") is not None else ""
        figures[role] = f"train loss {m['train_loss']}, {loss}{m['steps']} steps"
        outputs[role] = _stored(ctx, result.run)
    return Done(figures, outputs)


def _resumable(ctx: Context, role: str, settings, fingerprint: str) -> Path | None:
    """The newest unfinished SFT run of the role, if it was started on this dataset with these settings: an interrupted `tutor run`."""
    from . import runs

    try:
        run = runs.unfinished(ctx.workspace, ctx.kit.name, role, "sft")
        started = runs.read_meta(run, runs.RUN_META)
    except TutorError:
        return None
    same = started.get("dataset", {}).get("fingerprint") == fingerprint and started.get("settings") == settings.model_dump(mode="json")
    return run if same else None


def adapters_missing(ctx: Context, outputs: dict) -> str | None:
    from .runs import ADAPTER_META

    return next((str(_found(ctx, path)) for path in outputs.values() if not (_found(ctx, path) / ADAPTER_META).is_file()), None)


def _answer_adapter(ctx: Context) -> str | None:
    """The answer adapter train made, as run.json has it (relative to the workspace)."""
    if "answer" not in _train_settings(ctx).roles:
        raise StageSkipped("no answer adapter is trained ([train] roles)")
    return ctx.output("train").get("answer")


def _adapter_folder(ctx: Context) -> str:
    if (folder := _found(ctx, _answer_adapter(ctx))) is None:
        raise TutorError("train made no answer adapter: run the train stage first")
    return str(folder)


def eval_inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.workspace.config().eval
    return {"adapter": _answer_adapter(ctx), "dataset": ctx.output("dataset").get("answer"),
            "eval config": cfg.model_dump(mode="json"), "base": ctx.workspace.config().model.base,
            "kb": ctx.output("kb").get("manifest") if cfg.rag else None, "code": code_version(ctx.kit)}


def eval_run(ctx: Context) -> Done:
    from .eval.run import Options, evaluate
    from .kb import KnowledgeBase

    cfg = ctx.workspace.config().eval
    models = ["base", _adapter_folder(ctx)]
    if cfg.rag:
        if not KnowledgeBase(ctx.workspace, ctx.kit.name, ctx.say).exists():
            raise TutorError("[eval] rag = true, but there is no knowledge base to retrieve from: ship notes/, "
                             f"`tutor --subject {ctx.kit.name} kb add FILE`, or set [eval] rag = false")
        models.append(f"{models[1]}+rag")
    options = Options(split=cfg.split, models=models, limit=cfg.limit, judge=cfg.judge,
                      max_new_tokens=cfg.max_new_tokens, batch_size=cfg.batch_size)
    folder, summary = evaluate(ctx.kit, ctx.workspace, options, say=ctx.say)
    rag = {"with the knowledge base": summary["rag"][0]} if summary.get("rag") else {}
    return Done({"headline": summary["headline"], **rag, "report": str(folder / "report.md")}, {"run": _stored(ctx, folder)})


def eval_missing(ctx: Context, outputs: dict) -> str | None:
    folder = _found(ctx, outputs.get("run"))
    return None if folder and (folder / "summary.json").is_file() else str(folder)


def export_inputs(ctx: Context) -> dict[str, Any]:
    cfg = ctx.workspace.config().export
    if not cfg.formats:
        raise StageSkipped("no formats ([export] formats = [])")
    return {"adapter": _answer_adapter(ctx), "eval": ctx.output("eval").get("run"), "export config": cfg.model_dump(mode="json"),
            "code": code_version(ctx.kit)}


def export_check(ctx: Context) -> None:
    from .errors import UnknownName
    from .export import QUANTS, parse_formats

    cfg = ctx.workspace.config().export
    parse_formats(",".join(cfg.formats))
    for quant in cfg.quants:
        if quant not in (*QUANTS, "bf16", "f32"):
            raise UnknownName("GGUF type", quant, [*QUANTS, "bf16", "f32"])


def export_run(ctx: Context) -> Done:
    from .export import export

    cfg = ctx.workspace.config().export
    done = export(ctx.workspace, ctx.kit.name, ctx.workspace.exports_dir(ctx.kit.name), cfg.formats, adapter=_adapter_folder(ctx),
                  quants=cfg.quants, overwrite=True, force=cfg.force, say=ctx.say)
    size = sum(p.stat().st_size for paths in done.files.values() for p in paths if p.is_file()) / 1e6
    figures = {"formats": ", ".join(done.files), "size": f"{size:.0f} MB", "folder": str(done.folder)}
    if done.ollama_command:
        figures["ollama"] = done.ollama_command
    return Done(figures, {"folder": _stored(ctx, done.folder), "contract": digest(done.contract)})


def export_missing(ctx: Context, outputs: dict) -> str | None:
    folder = _found(ctx, outputs.get("folder"))
    return None if folder and (folder / "contract.json").is_file() else str(folder)


STAGES: tuple[Stage, ...] = (
    Stage("collect", "import exports and scrape sites into the bank", collect_inputs, collect_run, check=collect_check),
    Stage("teach", "a teacher model writes missing gold answers", teach_inputs, teach_run, ("collect",), teach_check, needs=("openai",),
          extra="teach"),
    Stage("diagrams", "DIAGRAM markers -> requests; the teacher draws them; every diagram compiled", diagrams_inputs, diagrams_run,
          ("collect", "teach"), teach_check),
    Stage("kb", "the knowledge base: the notes, the bank's train split, your documents", kb_inputs, kb_run, ("collect", "teach"),
          missing=kb_missing, needs=("chromadb", "bm25s", "Stemmer"), extra="kb", uses_model=True),
    Stage("dataset", "chat datasets, split and leakage-checked", dataset_inputs, dataset_run, ("collect", "teach", "diagrams", "kb"),
          missing=dataset_missing, needs=("datasets", "transformers"), extra="train", uses_model=True),
    Stage("train", "LoRA SFT of each role's adapter", train_inputs, train_run, ("dataset",), train_check, adapters_missing,
          needs=("torch", "peft", "trl"), extra="train", uses_model=True),
    Stage("eval", "base vs tuned on the held-out questions", eval_inputs, eval_run, ("kb", "dataset", "train"), missing=eval_missing,
          needs=("lm_eval",), extra="eval", uses_model=True),
    Stage("export", "peft, merged, GGUF and Ollama, contract-checked", export_inputs, export_run, ("train", "eval"), export_check,
          export_missing, needs=("gguf",), extra="export", uses_model=True),
)
STAGE_NAMES = tuple(s.name for s in STAGES)


# --- the record -------------------------------------------------------------------------------


def read_record(workspace: Workspace, subject: str, say: Callable[[str], None]) -> dict[str, Any]:
    path = workspace.run_record(subject)
    if not path.exists():
        return {"subject": subject, "stages": {}}
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if not isinstance(record.get("stages"), dict):
            raise ValueError("no stages")
        return record
    except (OSError, ValueError) as err:
        say(f"warning: {path} is unreadable ({err}): every stage is decided afresh")
        return {"subject": subject, "stages": {}}


_record_lock = threading.Lock()


def write_record(workspace: Workspace, subject: str, record: dict[str, Any]) -> None:
    from .jsonl import write_atomic

    with _record_lock:
        write_atomic(workspace.run_record(subject), json.dumps(record, indent=2, ensure_ascii=False) + "\n")


# --- deciding ----------------------------------------------------------------------------------


@dataclass
class Outcome:
    """One stage of one subject: what was decided or happened, and why."""

    stage: str
    status: str  # run | up to date | skipped | not available | not selected | ran | failed | blocked | interrupted
    reason: str = ""
    seconds: float | None = None
    figures: dict[str, Any] = field(default_factory=dict)


def available(stage: Stage) -> str | None:
    """None when the stage can run here, else why not."""
    import importlib.util

    absent = [name for name in stage.needs if importlib.util.find_spec(name) is None]
    return f"not installed: {', '.join(absent)} (pip install 'tutor[{stage.extra}]')" if absent else None


def changes(was: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The inputs that differ, named for a person: 'bank answers.jsonl', 'train settings'..."""
    return [name for name in sorted(set(was) | set(now)) if was.get(name) != now.get(name)]


def decide(stage: Stage, ctx: Context, forced: bool, upstream_runs: list[str]) -> tuple[str, str, dict[str, Any] | None]:
    """(run | up to date | skipped | not available, why, the inputs when known)."""
    if why := available(stage):
        return "not available", why, None
    try:
        inputs = stage.inputs(ctx)
    except StageSkipped as skip:
        return "skipped", str(skip), None
    entry = ctx.record.get("stages", {}).get(stage.name)
    if forced:
        return "run", "forced (--force)", inputs
    if entry is None:
        return "run", "never run", inputs
    if entry.get("status") == "running":
        return "run", "interrupted last time: resumes", inputs
    if entry.get("status") != "done":
        return "run", f"failed last time: {entry.get('error', '?')}", inputs
    if entry.get("fingerprint") != digest(inputs):
        return "run", "inputs changed: " + ", ".join(changes(entry.get("inputs", {}), inputs)), inputs
    if stage.missing and (gone := stage.missing(ctx, entry.get("outputs", {}))):
        return "run", f"its output is gone: {gone}", inputs
    if upstream_runs:  # (a dry run's guess: a real run decides once they have run, from what they made)
        return "run", f"{' and '.join(upstream_runs)} run{'s' if len(upstream_runs) == 1 else ''} first", inputs
    return "up to date", f"inputs unchanged since {entry.get('finished', '?')}", inputs


# --- running -----------------------------------------------------------------------------------


@dataclass
class SubjectRun:
    subject: str
    outcomes: list[Outcome] = field(default_factory=list)
    failed: str | None = None  # the one-line reason a stage failed
    running: str | None = None  # the stage in progress


class Interrupted(TutorError):
    """Ctrl-C: the stage in progress is recorded as interrupted, and the next `tutor run` resumes it."""

    exit_code = 130


def run_stages(kit: SubjectKit, workspace: Workspace, stages: list[Stage], result: SubjectRun, *, forced: set[str],
               say: Callable[[str], None], dry_run: bool = False, foreground: bool = True,
               misconfigured: dict[str, str] | None = None) -> SubjectRun:
    """Decide, then run (unless dry_run), each of `stages` for one subject, in order; stop the subject at its first failure."""
    ctx = Context(kit, workspace, read_record(workspace, kit.name, say), say, foreground)
    rerun = [o.stage for o in result.outcomes if o.status in ("run", "ran")]
    for stage in stages:
        if result.failed:
            result.outcomes.append(Outcome(stage.name, "blocked", f"an earlier stage failed: {result.failed}"))
            continue
        if error := (misconfigured or {}).get(stage.name):
            result.failed = f"{stage.name}: {error}"
            result.outcomes.append(Outcome(stage.name, "failed", error))
            continue
        upstream = [name for name in stage.after if name in rerun] if dry_run else []
        try:
            status, why, inputs = decide(stage, ctx, stage.name in forced, upstream)
        except TutorError as err:
            result.failed = f"{stage.name}: {err}"
            result.outcomes.append(Outcome(stage.name, "failed", str(err)))
            continue
        if dry_run or status != "run":
            if status == "run":
                rerun.append(stage.name)
            result.outcomes.append(Outcome(stage.name, status, why))
            if not dry_run:
                say(f"{stage.name}: {status}: {why}")
            continue
        result.running = stage.name
        outcome = _run_one(stage, ctx, inputs, why)
        result.running = None
        result.outcomes.append(outcome)
        if outcome.status == "failed":
            result.failed = f"{stage.name}: {outcome.reason}"
        else:
            rerun.append(stage.name)
    return result


def _run_one(stage: Stage, ctx: Context, inputs: dict[str, Any], why: str) -> Outcome:
    stages = ctx.record.setdefault("stages", {})
    ctx.say(f"{stage.name}: running ({why})")
    started = time.monotonic()
    stages[stage.name] = {"status": "running", "fingerprint": digest(inputs), "inputs": inputs, "started": _now()}
    write_record(ctx.workspace, ctx.kit.name, ctx.record)
    try:
        done = stage.run(ctx)
    except KeyboardInterrupt:  # the record keeps saying "running": the next run resumes this stage
        raise Interrupted(f"interrupted during {ctx.kit.name} {stage.name}; everything done is saved: `tutor run` resumes") from None
    except TutorError as err:
        if err.exit_code == 130:  # a stage's own Ctrl-C handling (teach's)
            raise Interrupted(f"interrupted during {ctx.kit.name} {stage.name}: {err}") from None
        line = str(err)
    except Exception as err:  # noqa: BLE001 - a library's error or a bug: one line in the summary; the other subjects go on
        line = f"{type(err).__name__}: {err}".splitlines()[0][:300]
    else:
        seconds = round(time.monotonic() - started, 1)
        stages[stage.name] = {"status": "done", "fingerprint": digest(inputs), "inputs": inputs, "outputs": done.outputs,
                              "figures": done.figures, "seconds": seconds, "finished": _now()}
        write_record(ctx.workspace, ctx.kit.name, ctx.record)
        return Outcome(stage.name, "ran", why, seconds, done.figures)
    seconds = round(time.monotonic() - started, 1)
    stages[stage.name].update(status="failed", error=line, seconds=seconds)
    write_record(ctx.workspace, ctx.kit.name, ctx.record)
    ctx.say(f"{stage.name}: failed: {line}")
    return Outcome(stage.name, "failed", line, seconds)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d %H:%M:%S UTC")


def selected(start: str | None, until: str | None) -> list[Stage]:
    names = list(STAGE_NAMES)
    first, last = names.index(start) if start else 0, names.index(until) if until else len(names) - 1
    if first > last:
        raise TutorError(f"--from {start} comes after --until {until}: nothing to run (order: {' -> '.join(names)})")
    return list(STAGES[first : last + 1])


def pipeline(workspace: Workspace, subjects: list[str], *, start: str | None = None, until: str | None = None,
             force: tuple[str, ...] = (), dry_run: bool = False, say: Callable[[str], None] = print) -> list[SubjectRun]:
    """Run (or with dry_run, plan) the chosen stages for each subject. Holds the workspace's run lock unless dry_run."""
    from .registry import get_subject

    chosen = selected(start, until)
    forced = set(STAGE_NAMES) if "all" in force else set(force)
    workspace = workspace.pinned()
    kits = [get_subject(name) for name in subjects]
    results = [SubjectRun(kit.name) for kit in kits]
    many = len(kits) > 1

    def speaker(kit) -> Callable[[str], None]:
        return (lambda line: say(f"[{kit.name}] {line}")) if many else say

    if dry_run:  # a plan only reads, so it takes no lock; it shows what would fail, too
        for kit, result in zip(kits, results):
            run_stages(kit, workspace, chosen, result, forced=forced, say=speaker(kit), dry_run=True,
                       misconfigured=_preflight(kit, workspace, chosen))
        return [_with_unselected(r, chosen) for r in results]
    with run_lock(workspace, say):
        misconfigured = {kit.name: _preflight(kit, workspace, chosen) for kit in kits}
        for kit in kits:
            for stage, error in misconfigured[kit.name].items():
                speaker(kit)(f"{stage}: misconfigured: {error}")
        early = [s for s in chosen if not s.uses_model]
        late = [s for s in chosen if s.uses_model]

        def early_work(kit, result, foreground):
            return run_stages(kit, workspace, early, result, forced=forced, say=speaker(kit), foreground=foreground,
                              misconfigured=misconfigured[kit.name])

        # With several subjects the stages without a model start for all of them at once (a teacher is slow and
        # on the network); the model stages follow in the foreground, one subject at a time.
        background = {kit.name: _in_background(lambda kit=kit, result=result: early_work(kit, result, False))
                      for kit, result in zip(kits, results)} if many else {}
        try:
            for kit, result in zip(kits, results):
                if many:
                    try:
                        background[kit.name].result()
                    except Interrupted:
                        raise
                    except Exception as err:  # noqa: BLE001 - a bug in a background stage fails its subject only
                        result.failed = f"{type(err).__name__}: {err}".splitlines()[0]
                else:
                    early_work(kit, result, True)
                run_stages(kit, workspace, late, result, forced=forced, say=speaker(kit), misconfigured=misconfigured[kit.name])
        except (Interrupted, KeyboardInterrupt) as err:  # (KeyboardInterrupt: while waiting on a background subject)
            for result in results:
                if result.running:
                    result.outcomes.append(Outcome(result.running, "interrupted", "Ctrl-C: `tutor run` resumes it"))
            write_summary(workspace, [_with_unselected(r, chosen) for r in results])
            if isinstance(err, Interrupted):
                raise
            raise Interrupted("interrupted; everything done is saved: `tutor run` resumes") from None
        results = [_with_unselected(r, chosen) for r in results]
        write_summary(workspace, results)
        return results


def _with_unselected(run: SubjectRun, chosen: list[Stage]) -> SubjectRun:
    outside = [Outcome(s.name, "not selected", "outside --from/--until") for s in STAGES if s not in chosen]
    run.outcomes = sorted(run.outcomes + outside, key=lambda o: STAGE_NAMES.index(o.stage))
    return run


def _preflight(kit: SubjectKit, workspace: Workspace, stages: list[Stage]) -> dict[str, str]:
    """Each stage's own check of its settings (a teacher without a key, an unknown source), before any stage starts."""
    ctx = Context(kit, workspace, {"stages": {}}, lambda _: None)
    problems = {}
    for stage in stages:
        if stage.check is None or available(stage):
            continue
        try:
            stage.check(ctx)
        except TutorError as err:
            problems[stage.name] = str(err)
    return problems


def _in_background(work: Callable[[], SubjectRun]) -> Future:
    """A daemon thread: Ctrl-C in the foreground ends the run without waiting for a teacher; what is written is kept."""
    future: Future = Future()

    def target():
        try:
            future.set_result(work())
        except BaseException as err:  # noqa: BLE001 - handed to the foreground
            future.set_exception(err)

    threading.Thread(target=target, daemon=True, name="tutor-run").start()
    return future


# --- the summary -------------------------------------------------------------------------------


def figures_text(figures: dict[str, Any]) -> str:
    return "; ".join(f"{k}: {v}" if k not in ("headline",) else str(v) for k, v in figures.items())


def summary_rows(run: SubjectRun) -> list[tuple[str, ...]]:
    rows = []
    for o in run.outcomes:
        detail = figures_text(o.figures) if o.figures else o.reason
        rows.append((o.stage, o.status, f"{o.seconds:.0f} s" if o.seconds is not None else "", detail))
    return rows


def write_summary(workspace: Workspace, results: list[SubjectRun]) -> Path:
    from .jsonl import write_atomic

    lines = [f"# tutor run, {_now()}", ""]
    for run in results:
        state = f"failed: {run.failed}" if run.failed else "ok"
        lines += [f"## {run.subject} ({state})", "", "| stage | status | time | figures, or why |", "|---|---|---|---|"]
        lines += ["| " + " | ".join(cell.replace("|", "\\|").replace("\n", " ") for cell in row) + " |" for row in summary_rows(run)]
        lines.append("")
    write_atomic(workspace.run_summary, "\n".join(lines))
    return workspace.run_summary


# --- the lock ----------------------------------------------------------------------------------


@contextmanager
def run_lock(workspace: Workspace, say: Callable[[str], None]) -> Iterator[None]:
    """One `tutor run` per workspace. The file names the holder's pid; the flock dies with its process (kill -9 too)."""
    path = workspace.run_lock
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a+", encoding="utf-8") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            handle.seek(0)
            holder = handle.read().strip() or "?"
            raise TutorError(f"another `tutor run` (pid {holder}) is working on {workspace.root} ({path} is locked): "
                             f"wait for it to finish, or stop it") from None
        handle.seek(0)
        previous = handle.read().strip()
        if previous and previous != str(os.getpid()):
            say(f"took over {path} from pid {previous}, which is no longer running")
        handle.seek(0)
        handle.truncate()
        handle.write(f"{os.getpid()}\n")
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()
            handle.flush()


def showcase(workspace: Workspace, subject: str, width: int = 700) -> list[str]:
    """What the run ends with: one held-out question answered by the base model and by the tuned adapter, from the
    last eval (no model is loaded again), then its headline. [] when no eval has run."""
    from collections import defaultdict

    from .answers import question_text
    from .dataset import choose_bank
    from .eval import report
    from .registry import get_subject

    entry = read_record(workspace, subject, lambda _: None).get("stages", {}).get("eval", {})
    folder = workspace.root / entry.get("outputs", {}).get("run", "-")
    if entry.get("status") != "done" or not (folder / "summary.json").is_file():
        return []
    info, results = report.load_run(folder)
    summary = report.read_summary(folder)
    labels = [m["label"] for m in info["models"]]
    if len(labels) < 2:
        return [f"eval: {summary['headline']}"]
    base, tuned = labels[0], labels[1]
    bank = choose_bank(get_subject(subject), workspace)[0]
    questions = {q.id: q for q in bank.questions}
    gold = {a.question_id: len(a.text) for a in bank.answers}
    replies: dict[str, dict[str, str]] = defaultdict(dict)
    for r in results:
        if r.kind == "question" and r.item in questions:
            replies[r.item][r.model] = r.output
    both = [item for item, by in replies.items() if base in by and tuned in by]
    lines = []
    if both:  # the shortest gold answer: a small model's reply to it stays readable
        item = min(both, key=lambda i: (gold.get(i, 1 << 30), i))
        q = questions[item]
        marks = f"{q.marks} mark{'s' if q.marks != 1 else ''}"
        lines += [f"held-out question {item[:12]} ({q.type}, {marks}; never trained on):", _indent(question_text(q), width), "",
                  f"base model ({base}):", _indent(replies[item][base], width), "", f"tuned adapter ({tuned}):",
                  _indent(replies[item][tuned], width), ""]
    rag = [f"eval: {line}" for line in summary.get("rag", [])]
    return lines + [f"eval: {summary['headline']}", *rag, f"report: {folder / 'report.md'}"]


def _indent(text: str, width: int) -> str:
    text = text.strip() or "(empty reply)"
    text = text if len(text) <= width else text[:width].rstrip() + " [...]"
    return "\n".join("    " + line for line in text.splitlines())
