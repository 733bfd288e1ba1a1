"""The teach stage: a teacher model writes gold answers, then diagram code that compiles.

This is the step users pay for, request by request, so it is built around
never losing a reply and never paying for one twice:

  - Every reply is appended, with its token usage, to one response log
    (<workspace>/cache/teacher/responses.jsonl) and fsynced the moment it
    arrives, before anything is done with it. Each entry is keyed by a hash of
    what determines the reply: the model, the sampling parameters, the exact
    messages (the rendered templates are in them) and TEACH_VERSION. Asking
    again for a key the log holds replays the logged reply for free, so a
    re-run, or a restart after kill -9, sends only what is missing. The only
    requests a crash can cost twice are the ones in flight at that moment.
  - A torn last line (a crash mid-write) is cut off on start; the reply it
    held is asked for again.
  - One retry layer: the openai client's own retries are off (max_retries=0)
    and ours retry 429s (waiting as long as Retry-After says, and holding back
    every other request meanwhile), 5xx, dropped connections and malformed
    bodies, with backoff, until the item's total deadline.
  - A request that timed out may still be billed: a provider keeps generating
    after the client gives up. So it is re-sent only `retry_timeouts` times
    (default once), and a run where most requests time out stops. Such
    requests, and replies cut off or malformed, are counted as possibly billed
    and shown in the report.
  - A teacher that refuses connections (or whose name does not resolve) stops
    the run after a few tries, naming the URL: it is down, not busy.
  - A budget (requests, tokens) stops a run cleanly; Ctrl-C too. Whatever is
    on disk is complete and the next run carries on from it.

Then the subject-specific part: a reply must be a valid gold answer for its
question (length in the type's band, DIAGRAM markers well formed, the MCQ key
chosen); an invalid one is asked for once more with the reason added to the
prompt, then goes to a rejects file. Diagram code is compiled, and a failure
is sent back with the compiler's concise error for a few repair rounds.

openai is imported only when a teacher is actually contacted.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib
import json
import os
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

from .bank import ANSWERS, DIAGRAMS, QUESTIONS
from .errors import ConfigError, Problem, TutorError, ValidationFailed
from .jsonl import append_jsonl, iter_jsonl, repair_tail
from .markers import MarkerError, find_diagrams
from .models import Diagram, DiagramRequest, GoldAnswer, Model, Question, QuestionType
from .registry import SubjectKit, registry
from .config import TeacherConfig
from .workspace import Workspace

# Part of every request key: bump it when the requests we build change in a way
# the messages do not show (a new request parameter, say), so nothing stale is replayed.
TEACH_VERSION = 1
ANSWER_REJECTS = "answer-rejects.jsonl"
DIAGRAM_ATTEMPTS = "diagram-attempts.jsonl"
REQUESTS = "diagram-requests.jsonl"
VALIDATION_RETRIES = 1  # an invalid reply is asked for once more, with the reason
# Seconds to open a connection. Far below the request timeout (minutes, for a reasoning model), so an
# address that drops packets fails in seconds instead of after the whole timeout.
CONNECT_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 3  # one request refused a connection this many times: the teacher is down, not busy
# The run stops when, of the last TIMEOUT_WINDOW finished attempts (and at least TIMEOUT_STOP_AFTER),
# more than half timed out: every further one may be billed and bring nothing back.
TIMEOUT_WINDOW = 20
TIMEOUT_STOP_AFTER = 5


class Interrupted(TutorError):
    """Ctrl-C: everything received is saved."""

    exit_code = 130


class TeacherRefused(TutorError):
    """An answer from the teacher that no retry can change: a bad key, an unknown model, a bad request."""


class TeacherUnreachable(TutorError):
    """No connection to the teacher at all (refused, no such host, no answer to the connect): it is down or misnamed."""


# --- the teacher's settings ---------------------------------------------------------------


def teacher_config(workspace: Workspace, environ: dict[str, str] | None = None) -> TeacherConfig:
    """The effective [teacher] settings: preset < tutor.toml < TUTOR_TEACHER_* variables."""
    cfg = workspace.config().teacher.resolve(environ)
    if not cfg.model:
        raise ConfigError(f"no teacher model: the {cfg.preset!r} preset names none; set model in [teacher] of {workspace.config_path} or TUTOR_TEACHER_MODEL")
    return cfg


def api_key(cfg: TeacherConfig, environ: dict[str, str] | None = None) -> str:
    """The key, from the variable the config names. It is never written anywhere."""
    environ = os.environ if environ is None else environ
    if not cfg.api_key_env:
        return "none"  # local servers (vLLM, Ollama) take any key; the client insists on one
    key = environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise ConfigError(f"the teacher's API key is not set: export {cfg.api_key_env}=... (teacher.api_key_env in tutor.toml names the variable)")
    return key


# --- the response log: every reply on disk as soon as it arrives ---------------------------


def request_key(cfg: TeacherConfig, messages: list[dict], salt: str | None = None) -> str:
    """What determines a reply. The stream setting and the server address do not."""
    params = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    blob = json.dumps([TEACH_VERSION, cfg.model, params, messages, salt], sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(blob.encode()).hexdigest()


class ResponseLog:
    """Append-only JSON Lines of replies (and errors), indexed in memory by request key.

    Appends are single write() calls under an exclusive flock and fsynced, so
    several runs (one per subject, say) can share the log; the in-memory index
    holds only offsets, so memory does not grow with the replies' size.
    """

    def __init__(self, path: Path):
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fd = os.open(self.path, os.O_RDWR | os.O_CREAT | os.O_APPEND, 0o666)
        self._index: dict[str, tuple[int, int]] = {}  # key -> (offset, length)
        with self._locked():
            self._load()

    @contextmanager
    def _locked(self):
        fcntl.flock(self._fd, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(self._fd, fcntl.LOCK_UN)

    def _load(self) -> None:
        offset = 0
        with open(self.path, "rb") as handle:
            for line in handle:
                if not line.endswith(b"\n"):
                    # A torn last line: its writer died mid-write (we hold the lock, so no
                    # live writer is behind it). Cut it off; that reply is asked for again.
                    os.ftruncate(self._fd, offset)
                    break
                try:
                    entry = json.loads(line)
                except ValueError:
                    entry = None
                if isinstance(entry, dict) and entry.get("key") and "error" not in entry:
                    self._index[entry["key"]] = (offset, len(line))
                offset += len(line)

    def __len__(self) -> int:
        return len(self._index)

    def __contains__(self, key: str) -> bool:
        return key in self._index

    def get(self, key: str) -> dict | None:
        if key not in self._index:
            return None
        offset, length = self._index[key]
        return json.loads(os.pread(self._fd, length, offset))

    def append(self, entry: dict) -> None:
        line = (json.dumps(entry, ensure_ascii=False) + "\n").encode()
        with self._locked():
            offset = os.lseek(self._fd, 0, os.SEEK_END)
            os.write(self._fd, line)
            os.fsync(self._fd)
        if entry.get("key") and "error" not in entry:
            self._index[entry["key"]] = (offset, len(line))

    def close(self) -> None:
        os.close(self._fd)


# --- talking to the teacher: one retry layer -----------------------------------------------


@dataclass
class Reply:
    key: str
    content: str  # as the model wrote it, <think> blocks included
    reasoning: str | None  # DeepSeek's reasoning_content
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int
    cached: bool = False

    @classmethod
    def from_entry(cls, entry: dict, cached: bool) -> Reply:
        usage = entry.get("usage") or {}
        return cls(entry["key"], entry.get("content") or "", entry.get("reasoning"), entry.get("finish_reason"),
                   usage.get("prompt_tokens", 0), usage.get("completion_tokens", 0), cached)


class ItemFailed(Exception):
    """No reply within the item's deadline, or its request timed out more than retry_timeouts times; the item stays pending."""


class RunStopped(Exception):
    """The run stops cleanly, for the reason its message gives; the item stays pending."""


class BudgetReached(RunStopped):
    """The run's request or token budget is spent; the item stays pending."""


@dataclass
class Usage:
    """What a run sent and spent. Tokens and cost count only replies paid for in this run."""

    requests: int = 0
    replayed: int = 0  # replies taken from the log instead of asked for
    # Requests the server had but no reply was saved for (timed out, cut off, malformed): a provider
    # may bill them all the same.
    maybe_billed: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    errors: Counter = field(default_factory=Counter)
    price_input: float = 0.0
    price_output: float = 0.0

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def cost(self) -> float:
        return (self.prompt_tokens * self.price_input + self.completion_tokens * self.price_output) / 1e6


def _retryable_errors() -> tuple[type[BaseException], ...]:
    import openai

    transport = []
    for name in ("httpx", "httpx2"):  # whichever HTTP library this openai release uses
        try:
            transport.append(importlib.import_module(name).HTTPError)
        except (ImportError, AttributeError):
            pass
    # ValueError: a body that is not JSON, or not a chat completion.
    return (openai.APIConnectionError, openai.APIResponseValidationError, TimeoutError, ValueError, *transport)


# Statuses worth asking again for: the server is busy, overloaded or broken for now.
# Any other 4xx (bad key, unknown model, bad request) would fail the same way every time.
RETRY_STATUSES = {408, 409, 425, 429}


class Teacher:
    """Asks the teacher model, through the openai client, at most `concurrency` requests at once."""

    def __init__(self, cfg: TeacherConfig, log: ResponseLog, key: str | None = None, *, meta: dict | None = None):
        import openai

        self.cfg, self.log, self.meta = cfg, log, meta or {}
        self._key = key  # kept only to scrub it from error messages
        # max_retries=0: retries are ours alone (stacked layers multiply the requests a failure costs).
        # A connect timeout under the request timeout: a connect that fails is told apart from a slow reply.
        self._connect_timeout = min(CONNECT_TIMEOUT, cfg.timeout / 2)
        timeout = openai.Timeout(cfg.timeout, connect=self._connect_timeout)
        self.client = openai.AsyncOpenAI(base_url=cfg.base_url, api_key=key or "none", max_retries=0, timeout=timeout)
        self.usage = Usage(price_input=cfg.price_input or 0.0, price_output=cfg.price_output or 0.0)
        self._slots = asyncio.Semaphore(cfg.concurrency)
        self._retryable = _retryable_errors()
        self._status_error = openai.APIStatusError
        self._calm_until = 0.0  # after a 429, nobody sends before this (monotonic time)
        self._recent: deque[bool] = deque(maxlen=TIMEOUT_WINDOW)  # the last finished attempts: timed out or not
        self.stopping: str | None = None  # once set, the run is stopping: nothing more is sent
        self._disk = ThreadPoolExecutor(1, thread_name_prefix="tutor-log")  # fsyncs off the event loop, in order

    async def close(self) -> None:
        await self.client.close()
        self._disk.shutdown(wait=True)

    async def write(self, fn: Callable, *args) -> None:
        """Run a disk write on the writer thread; writes happen in the order they are asked for."""
        await asyncio.get_running_loop().run_in_executor(self._disk, fn, *args)

    def over_budget(self) -> bool:
        cfg = self.cfg
        return (cfg.budget_requests is not None and self.usage.requests >= cfg.budget_requests) or (
            cfg.budget_tokens is not None and self.usage.tokens >= cfg.budget_tokens)

    async def ask(self, messages: list[dict], *, started: float, item: str, salt: str | None = None) -> Reply:
        """The reply to `messages`: from the log if it was ever received, else from the teacher.

        Raises ItemFailed when the item's deadline (counted from `started`)
        passes or its request timed out too often, RunStopped when the budget
        is spent or most requests time out, TeacherRefused when the server
        turns the request down for good, TeacherUnreachable when it cannot be
        connected to.
        """
        key = request_key(self.cfg, messages, salt)
        if entry := self.log.get(key):
            self.usage.replayed += 1
            return Reply.from_entry(entry, cached=True)
        deadline = started + self.cfg.deadline
        attempt = 0
        failures: Counter = Counter()  # this request's failed attempts, by kind
        while True:
            if (wait := self._calm_until - time.monotonic()) > 0:
                await asyncio.sleep(wait)
            async with self._slots:
                if self.stopping:  # decided while this item waited for a slot
                    raise RunStopped(self.stopping)
                left = deadline - time.monotonic()
                if left <= 0:
                    raise ItemFailed(f"no reply within the {self.cfg.deadline:g} s deadline ({attempt} attempts)")
                if self.over_budget():
                    raise BudgetReached(_budget_note(self.cfg, self.usage))
                self.usage.requests += 1
                attempt += 1
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(min(self.cfg.timeout, left)):
                        reply = await self._send(key, messages)
                except self._status_error as err:
                    if err.status_code not in RETRY_STATUSES and err.status_code < 500:
                        raise TeacherRefused(f"the teacher refused the request: {self._describe(err)}") from None
                    retry_in = await self._failed(err, key, item, attempt, deadline, failures)
                except self._retryable as err:
                    retry_in = await self._failed(err, key, item, attempt, deadline, failures)
                else:
                    self._recent.append(False)
                    self.usage.prompt_tokens += reply.prompt_tokens
                    self.usage.completion_tokens += reply.completion_tokens
                    entry = {"key": key, "at": _now(), "model": self.cfg.model, **self.meta, "item": item, "content": reply.content,
                             "reasoning": reply.reasoning, "finish_reason": reply.finish_reason, "seconds": round(time.monotonic() - sent, 3),
                             "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}}
                    # On disk before anything else happens to it: from here on it is never paid for again.
                    await self.write(self.log.append, entry)
                    return reply
            await asyncio.sleep(retry_in)  # outside the slot: a waiting item does not hold back the others

    async def _failed(self, err: BaseException, key: str, item: str, attempt: int, deadline: float, failures: Counter) -> float:
        """Log a failed attempt and decide what follows it: the seconds to wait before the next one;
        ItemFailed when this item gives up; RunStopped or TeacherUnreachable when the whole run does."""
        cfg, reason, kind = self.cfg, self._describe(err), _error_kind(err)
        failures[kind] += 1
        self.usage.errors[kind] += 1
        if kind in ("timeout", "malformed", "connection"):  # the server had the request, and no reply was saved
            self.usage.maybe_billed += 1
        await self.write(self.log.append, {"key": key, "at": _now(), "error": reason, **self.meta, "item": item})
        if kind == "connect":  # never reached the server: nothing billed, and nothing gained by waiting long
            if failures[kind] >= CONNECT_ATTEMPTS:
                raise TeacherUnreachable(f"cannot connect to the teacher at {cfg.base_url} ({reason}, {failures[kind]} tries): "
                                         "is it running, and is that its address? Set teacher.base_url in tutor.toml or TUTOR_TEACHER_BASE_URL")
        else:
            self._recent.append(kind == "timeout")
            timeouts = sum(self._recent)
            if self.stopping is None and len(self._recent) >= TIMEOUT_STOP_AFTER and 2 * timeouts > len(self._recent):
                self.stopping = (f"most requests time out ({timeouts} of the last {len(self._recent)} got no reply within the "
                                 f"{cfg.timeout:g} s request timeout) at {cfg.base_url}; each may be billed all the same. "
                                 "If the teacher is just slow, raise teacher.timeout (TUTOR_TEACHER_TIMEOUT)")
            if self.stopping:
                raise RunStopped(self.stopping)
        if kind == "timeout" and failures[kind] > cfg.retry_timeouts:
            raise ItemFailed(f"{reason} (sent {failures[kind]}x); not re-sent, to avoid paying twice (the teacher may bill a request "
                             f"it was still working on): raise teacher.timeout to wait longer, or teacher.retry_timeouts "
                             f"(now {cfg.retry_timeouts}) to re-send more")
        pause = _retry_after(err)
        if pause is not None:  # the server said how long: hold every request back that long, not just this one
            self._calm_until = max(self._calm_until, time.monotonic() + pause)
        else:
            pause = min(60.0, self.cfg.backoff * 2 ** (attempt - 1)) * random.uniform(0.5, 1.0)  # jitter: no thundering herd
        if time.monotonic() + pause >= deadline:
            raise ItemFailed(f"{reason}; gave up after {attempt} attempts at the {self.cfg.deadline:g} s deadline")
        return pause

    async def _send(self, key: str, messages: list[dict]) -> Reply:
        cfg = self.cfg
        params = {"model": cfg.model, "messages": messages, "max_tokens": cfg.max_tokens}
        if cfg.temperature is not None:
            params["temperature"] = cfg.temperature
        if not cfg.stream:
            response = await self.client.chat.completions.create(**params)
            if not response.choices:
                raise ValueError("the reply has no choices")
            choice = response.choices[0]
            message = choice.message
            usage = response.usage
            content = message.content or ""
            return Reply(key, content, getattr(message, "reasoning_content", None), choice.finish_reason,
                         *_tokens(usage, messages, content, getattr(message, "reasoning_content", None)))
        stream = await self.client.chat.completions.create(**params, stream=True, stream_options={"include_usage": True})
        content, reasoning, finish, usage = [], [], None, None
        async with stream:  # closes the connection if we are cancelled or time out mid-stream
            async for chunk in stream:
                usage = chunk.usage or usage
                for choice in chunk.choices or []:
                    delta = choice.delta
                    if delta is not None:
                        content.append(delta.content or "")
                        reasoning.append(getattr(delta, "reasoning_content", None) or "")
                    finish = choice.finish_reason or finish
        text, thought = "".join(content), "".join(reasoning) or None
        if finish is None:
            raise ValueError("the stream ended without a finish reason")
        return Reply(key, text, thought, finish, *_tokens(usage, messages, text, thought))

    def _describe(self, err: BaseException) -> str:
        """One line about a failure, with the API key scrubbed out of it."""
        status = getattr(err, "status_code", None)
        if _not_connected(err):
            found = err.__cause__ or err  # the transport's own words: refused, unknown host
            text = f"{type(found).__name__}: {str(found) or f'no answer to the connect within {self._connect_timeout:g} s'}"
        elif isinstance(err, TimeoutError) or "Timeout" in type(err).__name__:
            text = f"no reply within the {self.cfg.timeout:g} s request timeout"
        else:
            text = f"{type(err).__name__}" + (f" {status}" if status else "") + f": {err}"
        if status in (401, 403):
            text += f" (is {self.cfg.api_key_env or 'the key'} right for {self.cfg.base_url}?)"
        elif status == 404:
            text += f" (is the model {self.cfg.model!r} served at {self.cfg.base_url}?)"
        if self._key and self._key != "none":
            text = text.replace(self._key, "***")
        return " ".join(text.split())[:500]


def _tokens(usage, messages: list[dict], content: str, reasoning: str | None) -> tuple[int, int]:
    if usage is not None:
        return usage.prompt_tokens or 0, usage.completion_tokens or 0
    # A server that reports no usage: about four characters a token.
    return sum(len(m["content"]) for m in messages) // 4, (len(content) + len(reasoning or "")) // 4


def _retry_after(err: BaseException) -> float | None:
    """Seconds the server asked us to wait (Retry-After, or OpenAI's retry-after-ms), if it did."""
    response = getattr(err, "response", None)
    headers = getattr(response, "headers", None)
    if headers is None:
        return None
    if (ms := headers.get("retry-after-ms")) is not None:
        try:
            return max(0.0, float(ms) / 1000)
        except ValueError:
            pass
    if (value := headers.get("retry-after")) is not None:
        try:
            return max(0.0, float(value))
        except ValueError:
            from email.utils import parsedate_to_datetime

            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
            except (TypeError, ValueError):
                return None
    return None


def _not_connected(err: BaseException | None) -> bool:
    """Whether the request never reached the server: connection refused, no such host, no answer to the connect.

    The openai client wraps the transport's error; its class name says which
    (httpx and httpx2 name them alike), wherever in the chain it is.
    """
    for _ in range(10):  # a chain is short; the bound only guards against a cycle
        if err is None:
            break
        if type(err).__name__ in ("ConnectError", "ConnectTimeout"):
            return True
        err = err.__cause__ or err.__context__
    return False


def _error_kind(err: BaseException) -> str:
    status = getattr(err, "status_code", None)
    if status:
        return str(status)
    if _not_connected(err):
        return "connect"
    if isinstance(err, TimeoutError) or "Timeout" in type(err).__name__:
        return "timeout"
    if isinstance(err, ValueError):
        return "malformed"
    return "connection"


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# --- what a reply says, apart from how the model got there -----------------------------------

_THINK = re.compile(r"<think>(.*?)</think>", re.DOTALL | re.IGNORECASE)


def split_reasoning(content: str, reasoning: str | None = None) -> tuple[str, str | None]:
    """(answer, reasoning): DeepSeek's reasoning_content and <think> blocks kept apart from the answer."""
    thoughts = [reasoning.strip()] if reasoning and reasoning.strip() else []
    thoughts += [t.strip() for t in _THINK.findall(content) if t.strip()]
    answer = _THINK.sub("", content)
    lower = answer.lower()
    if "</think>" in lower:  # some servers drop the opening tag: everything before the close is thought
        cut = lower.rindex("</think>")
        thoughts.append(answer[:cut].strip())
        answer = answer[cut + len("</think>"):]
    elif "<think>" in lower:  # cut off while still thinking: no answer at all
        cut = lower.index("<think>")
        thoughts.append(answer[cut + len("<think>"):].strip())
        answer = answer[:cut]
    return answer.strip(), "\n\n".join(t for t in thoughts if t) or None


def check_answer(kit: SubjectKit, question: Question, qtype: QuestionType, text: str, finish_reason: str | None) -> str | None:
    """Why `text` is not a gold answer to `question`, or None when it is one.

    The same rules `bank validate` applies to a bank's answers, so what the
    teacher writes passes them; the reason is phrased for the teacher to read.
    """
    if finish_reason == "length":
        return "it was cut off before the end (the length limit): write a complete, shorter answer"
    if not text.strip():
        return "it was empty: write the whole answer"
    try:
        markers = find_diagrams(text)
    except MarkerError as err:
        return f"a (DIAGRAM: ...) marker is malformed ({err}): write each as (DIAGRAM: description) with its brackets closed"
    if qtype.diagrams == "required" and not markers:
        return "a full-mark answer of this type includes a diagram, and it had no (DIAGRAM: ...) marker"
    if qtype.diagrams == "none" and markers:
        return "answers of this type take no diagram, and it had a (DIAGRAM: ...) marker"
    if qtype.answer_words:
        words = GoldAnswer(question_id=question.id, text=text, author="check").words
        low, high = qtype.answer_words
        if not low <= words <= high:
            return f"it had {words} words, outside the {low} to {high} expected of this type, {qtype.name} (diagram descriptions not counted)"
    if question.is_mcq:
        score = registry().evaluators["mcq"].score(question, text)
        if score.marks != score.out_of:
            return f"it must commit to the correct option with a final line 'Answer: X' ({score.feedback})"
    return None


def with_reason(messages: list[dict], reason: str) -> list[dict]:
    """The same prompt, telling the teacher why its last answer was turned down."""
    note = f"\n\n## Your previous answer was rejected\nIt was rejected because {reason}. Write the answer again, fixing this."
    return [*messages[:-1], {**messages[-1], "content": messages[-1]["content"] + note}]


# --- reading what is already done, tolerating a crash's torn last line -----------------------


def field_counts(path: Path, field_name: str, where: Callable[[dict], bool] = lambda record: True) -> Counter:
    """How often each value of one field occurs over a JSON Lines file (in the records `where` picks).

    Lines that do not parse are skipped: a done-list must not stop a run.
    """
    found: Counter = Counter()
    if path.exists():
        with open(path, "rb") as handle:
            for line in handle:
                try:
                    record = json.loads(line)
                    value = record.get(field_name) if where(record) else None
                except (ValueError, AttributeError):
                    continue
                if value:
                    found[value] += 1
    return found


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


# --- a run over many items: bounded, stoppable --------------------------------------------------


async def run_items(items: Iterable, handle: Callable[[object], Awaitable[None]], width: int, stop: Callable[[], bool]) -> None:
    """handle(item) for each item, at most `width` at once, reading `items` lazily.

    Items are pulled only as slots free up, so memory stays flat however long
    the bank is. A failure that escapes `handle` (the teacher refused for good
    or cannot be reached, Ctrl-C) cancels the rest, and waits for them, so the
    error is all that is reported; what they had written stays written.
    """
    pending: set[asyncio.Task] = set()

    async def settle(until: int) -> None:
        nonlocal pending
        while len(pending) > until:
            done, pending = await asyncio.wait(pending, return_when=asyncio.FIRST_COMPLETED)
            # Every finished task's exception is retrieved, not just the first: asyncio prints the
            # others as "Task exception was never retrieved" tracebacks under the one-line error.
            errors = [task.exception() for task in done if not task.cancelled()]
            if failure := next((e for e in errors if e is not None), None):
                raise failure

    try:
        for item in items:
            if stop():
                break
            await settle(width - 1)
            pending.add(asyncio.create_task(handle(item)))
        await settle(0)
    finally:
        for task in pending:
            task.cancel()
        await asyncio.gather(*pending, return_exceptions=True)


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
                problems.append(Problem(str(path), line, "type", f"unknown question type {question.type!r}; valid: {', '.join(sorted(kit.types))}"))
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
    with exclusive(workspace.subject_dir(kit.name) / ".teach-answers.lock", "answers"):
        for name in (ANSWERS, ANSWER_REJECTS):
            repair_tail(bank / name)
        questions, run.total, run.skipped_rejects, run.answered_before = pending_questions(kit, workspace, type_id, limit, retry_rejects)
        rejects_before = field_counts(bank / ANSWER_REJECTS, "question_id") if retry_rejects else Counter()
        log = ResponseLog(workspace.cache_dir / "teacher" / "responses.jsonl")
        teacher = Teacher(cfg, log, key, meta={"stage": "answer", "subject": kit.name})
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
                reason = check_answer(kit, question, qtype, text, reply.finish_reason)
                if reason is None:
                    gold = GoldAnswer(question_id=question.id, text=text, author=author, reasoning=reasoning)
                    await teacher.write(append_jsonl, bank / ANSWERS, [gold])
                    run.answered += 1
                    return
                reasons.append(reason)
                messages = with_reason(prompt, reason)
            reject = AnswerReject(question_id=question.id, type=question.type, model=cfg.model, reasons=reasons, keys=keys,
                                  reply=text[:4000], at=_now())
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


def _budget_note(cfg: TeacherConfig, usage: Usage) -> str:
    return (f"the budget is spent ({usage.requests} requests of {cfg.budget_requests if cfg.budget_requests is not None else 'any'}, "
            f"{usage.tokens} tokens of {cfg.budget_tokens if cfg.budget_tokens is not None else 'any'}); raise it to go on")


def run_sync(coroutine_fn: Callable[[], Awaitable], run) -> object:
    """asyncio.run, turning Ctrl-C into a clean Interrupted (the run so far is on disk)."""
    try:
        return asyncio.run(coroutine_fn())
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted after {run.done} of {run.total}; everything received is saved: run the same command to go on") from None


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
    path = workspace.subject_dir(kit.name) / REQUESTS
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
    with exclusive(workspace.subject_dir(kit.name) / ".teach-diagrams.lock", "diagrams"):
        for name in (DIAGRAMS, DIAGRAM_ATTEMPTS):
            repair_tail(bank / name)
        todo, run.skipped_failures, run.compiled_before = pending_requests(kit, workspace, limit, retry_failed)
        run.total = len(todo)
        for name in {r.format for r in todo}:
            require_format(kit.format(name))
        renderer = renderer_for(workspace)
        compiling = asyncio.Semaphore(os.cpu_count() or 1)  # pdflatex is CPU-bound: one per core
        tries = field_counts(bank / DIAGRAM_ATTEMPTS, "request_id") if retry_failed else Counter()
        log = ResponseLog(workspace.cache_dir / "teacher" / "responses.jsonl")
        teacher = Teacher(cfg, log, key, meta={"stage": "diagram", "subject": kit.name})
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
                                    rounds=rounds, at=_now())
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
    path = workspace.cache_dir / "teacher" / "responses.jsonl"
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
