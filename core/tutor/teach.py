"""The teach stage: a teacher model writes gold answers, then diagram code that compiles.

This is the step users pay for, request by request. Talking to the teacher
(the response log that never pays for a reply twice, retries, deadlines,
budgets) is llm_client's; this module is what the teacher is asked and what
is kept:

  - A reply must be a valid gold answer for its question (answers.answer_flaws:
    length in the type's band, DIAGRAM markers well formed, the diagram
    policy, the MCQ key chosen); an invalid one is asked for once more with
    the reason added to the prompt, then goes to a rejects file.
  - Diagram code is compiled, and a failure is sent back with the compiler's
    concise error for a few repair rounds.
  - Every result is appended and fsynced as it comes, and what is done is read
    back on start: a re-run, or a restart after kill -9, carries on where the
    last one stopped. Ctrl-C stops cleanly.

openai is imported only when a teacher is actually contacted.
"""

from __future__ import annotations

import asyncio
import fcntl
import os
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

from .answers import answer_flaws
from .bank import ANSWERS, DIAGRAMS, QUESTIONS
from .config import TeacherConfig
from .errors import ConfigError, Problem, TutorError, ValidationFailed
from .jsonl import append_jsonl, field_counts, iter_jsonl, repair_tail
from .llm_client import ItemFailed, LLMClient, ResponseLog, RunStopped, Usage, request_key, run_items, split_reasoning, timestamp
from .models import Diagram, DiagramRequest, GoldAnswer, Model, Question, QuestionType
from .registry import SubjectKit, registry
from .workspace import Workspace

ANSWER_REJECTS = "answer-rejects.jsonl"
DIAGRAM_ATTEMPTS = "diagram-attempts.jsonl"
VALIDATION_RETRIES = 1  # an invalid reply is asked for once more, with the reason


class Interrupted(TutorError):
    """Ctrl-C: everything received is saved."""

    exit_code = 130


# --- the teacher's settings ---------------------------------------------------------------


def teacher_config(workspace: Workspace, environ: dict[str, str] | None = None) -> TeacherConfig:
    """The effective [teacher] settings: preset < tutor.toml < TUTOR_TEACHER_* variables."""
    cfg = workspace.config().teacher.resolve(environ)
    if not cfg.model:
        raise ConfigError(f"no teacher model: the {cfg.preset!r} preset names none; "
                          f"set model in [teacher] of {workspace.config_path} or TUTOR_TEACHER_MODEL")
    return cfg


# --- whether a reply is a gold answer --------------------------------------------------------


def check_answer(question: Question, qtype: QuestionType, text: str, finish_reason: str | None) -> str | None:
    """Why `text` is not a gold answer to `question`, or None when it is one.

    The rule `bank validate` applies to a bank's answers (answers.answer_flaws),
    so what the teacher writes passes it; the reason is sent back to the teacher.
    """
    if finish_reason == "length":
        return "it was cut off before the end (the length limit): write a complete, shorter answer"
    return "; ".join(flaw.message for flaw in answer_flaws(qtype, text, question, registry().evaluators["mcq"])) or None


def with_reason(messages: list[dict], reason: str) -> list[dict]:
    """The same prompt, telling the teacher why its last answer was turned down."""
    note = f"\n\n## Your previous answer was rejected\nIt was rejected: {reason}. Write the answer again, fixing this."
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + note}]


@contextmanager
def exclusive(path: Path, what: str):
    """One run per subject and stage at a time (the lock dies with its process, kill -9 included)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise TutorError(f"another `tutor teach {what}` is running on this subject ({path} is locked)") from None
        yield


@dataclass
class Progress:
    done: int
    total: int
    usage: Usage


# --- gold answers --------------------------------------------------------------------------------


class AnswerReject(Model):
    """A question the teacher could not answer validly: every reply's reason, and where to find the reply."""

    question_id: str
    type: str
    model: str
    reasons: list[str]
    keys: list[str] = []  # the replies, in the response log
    reply: str = ""  # the last reply, cut to a few thousand characters
    at: str


@dataclass
class AnswerRun:
    """What `teach answers` did; `total - done` is left for the next run."""

    total: int = 0
    answered: int = 0
    rejected: int = 0
    failed: int = 0
    skipped_rejects: int = 0
    answered_before: int = 0  # questions answered by earlier runs
    stopped: str | None = None  # why the run stopped early (budget, a teacher that mostly times out)
    failures: list[str] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.answered + self.rejected + self.failed


def questions_file(workspace: Workspace, kit: SubjectKit) -> Path:
    path = workspace.bank_dir(kit.name) / QUESTIONS
    if not path.exists():
        raise TutorError(f"no questions to answer: {path} does not exist; bring questions in first with "
                         f"`tutor --subject {kit.name} collect import FILE` (or `collect scrape SITE`)")
    with open(path, "rb") as handle:  # stops at the first line with text: cheap on a big bank
        if not any(line.strip() for line in handle):
            raise TutorError(f"no questions to answer: {path} has no questions yet; bring questions in first with "
                             f"`tutor --subject {kit.name} collect import FILE`")
    return path


def pending_questions(kit: SubjectKit, workspace: Workspace, type_id: str | None = None, limit: int | None = None,
                      retry_rejects: bool = False) -> tuple[Callable[[], Iterator[Question]], int, int, int]:
    """(a fresh iterator over the questions to answer, how many, rejects skipped, answered before).

    Reads the bank once to check it and count, so nothing is sent for a bank
    with a broken line; the iterator reads it again, line by line.
    """
    if type_id:
        kit.type(type_id)  # an unknown type is an error, not an empty run
    path = questions_file(workspace, kit)
    bank = workspace.bank_dir(kit.name)
    answered = field_counts(bank / ANSWERS, "question_id")
    rejected = set() if retry_rejects else field_counts(bank / ANSWER_REJECTS, "question_id")
    problems: list[Problem] = []

    def wanted(checking: bool) -> Iterator[Question]:
        count = 0
        for line, question in iter_jsonl(path, Question, problems if checking else []):
            if checking and question.type not in kit.types:
                valid = ", ".join(sorted(kit.types))
                problems.append(Problem(str(path), line, "type", f"unknown question type {question.type!r}; valid: {valid}"))
                continue
            if question.id in answered or (type_id and question.type != type_id) or question.id in rejected:
                continue
            if limit is not None and count >= limit:
                return
            count += 1
            yield question

    total = sum(1 for _ in wanted(True))
    if problems:
        raise ValidationFailed(problems)
    skipped = before = 0
    for _, question in iter_jsonl(path, Question, []):
        if type_id in (None, question.type):
            before += question.id in answered
            skipped += question.id in rejected and question.id not in answered
    return (lambda: wanted(False)), total, skipped, before


def answer_messages(kit: SubjectKit, user_dirs: list[Path], question: Question) -> list[dict]:
    from .prompts import question_context, render

    return render(kit, "answer", user_dirs, **question_context(kit, question))


async def teach_answers(kit: SubjectKit, workspace: Workspace, cfg: TeacherConfig, key: str, run: AnswerRun, *,
                        type_id: str | None = None, limit: int | None = None, retry_rejects: bool = False,
                        progress: Callable[[Progress], None] | None = None) -> AnswerRun:
    """Gold answers for every question of the workspace bank that has none. Fills `run` as it goes."""
    bank = workspace.bank_dir(kit.name)
    with exclusive(workspace.lock(kit.name, "teach-answers"), "answers"):
        for name in (ANSWERS, ANSWER_REJECTS):
            repair_tail(bank / name)
        questions, run.total, run.skipped_rejects, run.answered_before = pending_questions(kit, workspace, type_id, limit, retry_rejects)
        rejects_before = field_counts(bank / ANSWER_REJECTS, "question_id") if retry_rejects else Counter()
        log = ResponseLog(workspace.teacher_log)
        teacher = LLMClient(cfg, log, key, meta={"stage": "answer", "subject": kit.name})
        user_dirs = workspace.template_dirs(kit.name)  # tutor.toml is read once, not per question
        run.usage = teacher.usage
        author = f"teacher:{cfg.model}"
        start = time.monotonic()

        async def answer(question: Question) -> None:
            qtype = kit.type(question.type)
            prompt = answer_messages(kit, user_dirs, question)
            messages, reasons, keys, text = prompt, [], [], ""
            # Asking again after rejecting all before gets a fresh reply, not the logged one.
            salt = f"retry-{rejects_before[question.id]}" if rejects_before[question.id] else None
            started = time.monotonic()
            for _ in range(1 + VALIDATION_RETRIES):
                reply = await teacher.ask(messages, started=started, item=question.id, salt=salt)
                keys.append(reply.key)
                text, reasoning = split_reasoning(reply.content, reply.reasoning)
                reason = check_answer(question, qtype, text, reply.finish_reason)
                if reason is None:
                    gold = GoldAnswer(question_id=question.id, text=text, author=author, reasoning=reasoning)
                    await teacher.write(append_jsonl, bank / ANSWERS, [gold])
                    run.answered += 1
                    return
                reasons.append(reason)
                messages = with_reason(prompt, reason)
            reject = AnswerReject(question_id=question.id, type=question.type, model=cfg.model, reasons=reasons, keys=keys,
                                  reply=text[:4000], at=timestamp())
            await teacher.write(append_jsonl, bank / ANSWER_REJECTS, [reject])
            run.rejected += 1

        try:
            await run_items(questions(), lambda question: settle_item(run, teacher, progress, question.id, answer(question)),
                            2 * cfg.concurrency, lambda: run.stopped is not None)
        finally:
            await teacher.close()
            log.close()
            run.seconds = time.monotonic() - start
    return run


async def settle_item(run, teacher, progress, item_id: str, work: Awaitable[None]) -> None:
    """Await one item's work: an item that failed for good is recorded, a stop
    (a spent budget, a teacher that mostly times out) stops the run, and the
    progress bar moves on either way."""
    try:
        await work
    except ItemFailed as err:
        run.failed += 1
        run.failures.append(f"{item_id}: {err}")
    except RunStopped as err:
        run.stopped = run.stopped or str(err)  # the first reason; later ones repeat it
    finally:
        if progress:
            progress(Progress(run.done, run.total, teacher.usage))


def run_sync(coroutine_fn: Callable[[], Awaitable], run) -> object:
    """asyncio.run, turning Ctrl-C into a clean Interrupted (the run so far is on disk)."""
    try:
        return asyncio.run(coroutine_fn())
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {run.done} of {run.total}; everything received is saved: "
                          "run the same command to go on") from None


# --- diagram code ----------------------------------------------------------------------------------


class DiagramAttempt(Model):
    """One diagram request's rounds: what each reply's code did in the compiler."""

    request_id: str
    format: str
    description: str
    compiled: bool
    rounds: list[dict]  # {"key": ..., "ok": bool, "error": str | None}
    at: str


@dataclass
class DiagramRun:
    total: int = 0
    compiled: int = 0
    first_try: int = 0
    not_compiled: int = 0
    failed: int = 0
    skipped_failures: int = 0
    compiled_before: int = 0  # requests with compiled code from earlier runs
    attempts: int = 0  # replies compiled, repairs included
    stopped: str | None = None
    failures: list[str] = field(default_factory=list)
    per_format: dict[str, list[int]] = field(default_factory=dict)  # format -> [requests, first try, after repair]
    usage: Usage = field(default_factory=Usage)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        return self.compiled + self.not_compiled + self.failed

    @property
    def tried(self) -> int:
        return self.compiled + self.not_compiled


def pending_requests(kit: SubjectKit, workspace: Workspace, limit: int | None = None,
                     retry_failed: bool = False) -> tuple[list[DiagramRequest], int, int]:
    """(the diagram requests without compiled code, how many failed before and are skipped, how many have code)."""
    path = workspace.diagram_requests(kit.name)
    if not path.exists():
        raise TutorError(f"no diagram requests: {path} does not exist; gather them from gold answers first with "
                         f"`tutor --subject {kit.name} diagram extract {workspace.bank_dir(kit.name) / ANSWERS}`")
    problems: list[Problem] = []
    requests = [r for _, r in iter_jsonl(path, DiagramRequest, problems)]
    if problems:
        raise ValidationFailed(problems)
    bank = workspace.bank_dir(kit.name)
    drawn = field_counts(bank / DIAGRAMS, "id")
    failed = set() if retry_failed else field_counts(bank / DIAGRAM_ATTEMPTS, "request_id", where=lambda record: not record.get("compiled"))
    todo = [r for r in requests if r.id not in drawn and r.id not in failed]
    skipped = sum(1 for r in requests if r.id not in drawn and r.id in failed)
    for name in {r.format for r in todo}:
        kit.format(name)  # an unknown format is an error before anything is sent
    compiled = sum(1 for r in requests if r.id in drawn)
    return todo[:limit] if limit is not None else todo, skipped, compiled


def diagram_messages(kit: SubjectKit, user_dirs: list[Path], request: DiagramRequest) -> list[dict]:
    from .prompts import render

    return render(kit, "diagram", user_dirs, format=kit.format(request.format), description=request.description)


async def teach_diagrams(kit: SubjectKit, workspace: Workspace, cfg: TeacherConfig, key: str, run: DiagramRun, *,
                         limit: int | None = None, retry_failed: bool = False,
                         progress: Callable[[Progress], None] | None = None) -> DiagramRun:
    """Compiled diagram code for every diagram request that has none, repairing failures."""
    from .diagrams import renderer_for, require_format

    bank = workspace.bank_dir(kit.name)
    with exclusive(workspace.lock(kit.name, "teach-diagrams"), "diagrams"):
        for name in (DIAGRAMS, DIAGRAM_ATTEMPTS):
            repair_tail(bank / name)
        todo, run.skipped_failures, run.compiled_before = pending_requests(kit, workspace, limit, retry_failed)
        run.total = len(todo)
        for name in {r.format for r in todo}:
            require_format(kit.format(name))
        renderer = renderer_for(workspace)
        compiling = asyncio.Semaphore(os.cpu_count() or 1)  # pdflatex is CPU-bound: one per core
        tries = field_counts(bank / DIAGRAM_ATTEMPTS, "request_id") if retry_failed else Counter()
        log = ResponseLog(workspace.teacher_log)
        teacher = LLMClient(cfg, log, key, meta={"stage": "diagram", "subject": kit.name})
        user_dirs = workspace.template_dirs(kit.name)
        run.usage = teacher.usage
        author = f"teacher:{cfg.model}"
        start = time.monotonic()

        async def draw(request: DiagramRequest) -> None:
            fmt = kit.format(request.format)
            messages = diagram_messages(kit, user_dirs, request)
            salt = f"retry-{tries[request.id]}" if tries[request.id] else None
            rounds: list[dict] = []
            started = time.monotonic()
            counts = run.per_format.setdefault(fmt.name, [0, 0, 0])
            for round_ in range(1 + cfg.repair_rounds):
                reply = await teacher.ask(messages, started=started, item=request.id, salt=salt)
                answer, _ = split_reasoning(reply.content, reply.reasoning)
                code = fmt.extract(answer) if answer else ""
                if not code:
                    ok, error, repair = False, "no code in the reply", "Your reply had no code. Reply with one ```latex code block."
                else:
                    async with compiling:
                        rendering = await asyncio.to_thread(renderer.render, fmt, code)
                    ok = rendering.ok
                    error = str(rendering.error) if rendering.error else None
                    repair = rendering.error.for_repair() if rendering.error else ""
                run.attempts += 1
                rounds.append({"key": reply.key, "ok": ok, "error": error})
                if ok:
                    diagram = Diagram(description=request.description, format=fmt.name, code=code,
                                      question_id=request.question_ids[0] if request.question_ids else None, author=author)
                    await teacher.write(append_jsonl, bank / DIAGRAMS, [diagram])
                    break
                # A repair round: the model sees its code and the compiler's concise error.
                shown = code[:20000] if code else answer[:2000]
                messages = [*messages, {"role": "assistant", "content": f"```latex\n{shown}\n```"}, {"role": "user", "content": repair}]
            compiled = bool(rounds and rounds[-1]["ok"])
            record = DiagramAttempt(request_id=request.id, format=fmt.name, description=request.description, compiled=compiled,
                                    rounds=rounds, at=timestamp())
            await teacher.write(append_jsonl, bank / DIAGRAM_ATTEMPTS, [record])
            counts[0] += 1
            if compiled:
                run.compiled += 1
                counts[2] += 1
                if len(rounds) == 1:
                    run.first_try += 1
                    counts[1] += 1
            else:
                run.not_compiled += 1

        try:
            await run_items(todo, lambda request: settle_item(run, teacher, progress, request.id, draw(request)),
                            2 * cfg.concurrency, lambda: run.stopped is not None)
        finally:
            await teacher.close()
            log.close()
            run.seconds = time.monotonic() - start
    return run


# --- --dry-run: what a run would send, and roughly what it would cost --------------------------------


@dataclass
class Estimate:
    label: str  # a question type, or a diagram format
    items: int = 0
    replayed: int = 0  # already in the response log: free
    prompt_tokens: int = 0
    completion_tokens: int = 0
    example: list[dict] | None = None  # the first prompt, to show

    def cost(self, cfg: TeacherConfig) -> float:
        return (self.prompt_tokens * (cfg.price_input or 0) + self.completion_tokens * (cfg.price_output or 0)) / 1e6


TOKENS_PER_WORD = 1.4  # English exam prose; a rough figure, as all of this is
DIAGRAM_TOKENS = 400  # a TikZ body of a few dozen lines


def estimate(cfg: TeacherConfig, workspace: Workspace, items: Iterable[tuple[str, list[dict], int]]) -> list[Estimate]:
    """Per label: prompts counted at four characters a token; replies at `expected` tokens plus the
    configured reasoning allowance. Prompts the log already answered cost nothing."""
    path = workspace.teacher_log
    log = ResponseLog(path) if path.exists() else None
    found: dict[str, Estimate] = {}
    try:
        for label, messages, expected in items:
            est = found.setdefault(label, Estimate(label, example=messages))
            est.items += 1
            if log is not None and request_key(cfg, messages) in log:
                est.replayed += 1
                continue
            est.prompt_tokens += sum(len(m["content"]) for m in messages) // 4
            est.completion_tokens += expected + (cfg.reasoning_tokens or 0)
    finally:
        if log is not None:
            log.close()
    return list(found.values())


def answer_estimates(kit: SubjectKit, workspace: Workspace, cfg: TeacherConfig, type_id: str | None, limit: int | None,
                     retry_rejects: bool) -> list[Estimate]:
    questions, _, _, _ = pending_questions(kit, workspace, type_id, limit, retry_rejects)
    user_dirs = workspace.template_dirs(kit.name)

    def items():
        for question in questions():
            qtype = kit.type(question.type)
            words = sum(qtype.answer_words) // 2 if qtype.answer_words else 40 * question.marks
            yield qtype.id, answer_messages(kit, user_dirs, question), int(words * TOKENS_PER_WORD)

    return estimate(cfg, workspace, items())


def diagram_estimates(kit: SubjectKit, workspace: Workspace, cfg: TeacherConfig, limit: int | None, retry_failed: bool) -> list[Estimate]:
    todo, _, _ = pending_requests(kit, workspace, limit, retry_failed)
    user_dirs = workspace.template_dirs(kit.name)
    return estimate(cfg, workspace, ((r.format, diagram_messages(kit, user_dirs, r), DIAGRAM_TOKENS) for r in todo))
