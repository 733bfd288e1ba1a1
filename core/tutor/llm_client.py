"""The OpenAI-compatible client: one retry layer, a response log, deadlines and budgets.

Every model we pay for by the request (the teacher that writes gold answers,
an evaluation judge, the tutor modes' `--via teacher`, the server's proxy) is
reached through this module, so the rules below hold for all of them. It knows
chat messages and replies, nothing about questions, answers or diagrams.

  - Every reply is appended, with its token usage, to a response log
    (Workspace.teacher_log) and fsynced the moment it arrives, before anything
    is done with it. Each entry is keyed by a hash of what determines the
    reply: the model, the sampling parameters, the exact messages and
    REQUEST_VERSION. Asking again for a key the log holds replays the logged
    reply for free, so a re-run, or a restart after kill -9, sends only what
    is missing. The only requests a crash can cost twice are the ones in
    flight at that moment.
  - A torn last line (a crash mid-write) is cut off on start; the reply it
    held is asked for again.
  - One retry layer: the openai client's own retries are off (max_retries=0)
    and ours retry 429s (waiting as long as Retry-After says, and holding back
    every other request meanwhile), 5xx, dropped connections and malformed
    bodies, with backoff, until the item's total deadline.
  - A request that timed out may still be billed: a provider keeps generating
    after the client gives up. So it is re-sent only `retry_timeouts` times
    (default once), and a run where most requests time out stops. Such
    requests, and replies cut off or malformed, are counted as possibly billed.
  - An endpoint that refuses connections (or whose name does not resolve)
    stops the run after a few tries, naming the URL: it is down, not busy.
  - A budget (requests, tokens) stops a run cleanly.

openai is imported only when an endpoint is actually contacted.
"""

from __future__ import annotations

import asyncio
import fcntl
import hashlib
import importlib
import json
import math
import os
import random
import re
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from email.utils import parsedate_to_datetime
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError, TutorError
from .jsonl import parse_object, raw_lines, repair_tail

if TYPE_CHECKING:
    from .config import TeacherConfig

# Part of every request key: bump it when the requests we build change in a way
# the messages do not show (a new request parameter, say), so nothing stale is replayed.
REQUEST_VERSION = 1
# Seconds to open a connection. Far below the request timeout (minutes, for a reasoning model), so an
# address that drops packets fails in seconds instead of after the whole timeout.
CONNECT_TIMEOUT = 10.0
CONNECT_ATTEMPTS = 3  # one request refused a connection this many times: the endpoint is down, not busy
# The run stops when, of the last TIMEOUT_WINDOW finished attempts (and at least TIMEOUT_STOP_AFTER),
# more than half timed out: every further one may be billed and bring nothing back.
TIMEOUT_WINDOW = 20
TIMEOUT_STOP_AFTER = 5
# Statuses worth asking again for: the server is busy, overloaded or broken for now.
# Any other 4xx (bad key, unknown model, bad request) would fail the same way every time.
RETRY_STATUSES = {408, 409, 425, 429}


class RequestRefused(TutorError):
    """An answer from the endpoint that no retry can change: a bad key, an unknown model, a bad request."""


class Unreachable(TutorError):
    """No connection to the endpoint at all (refused, no such host, no answer to the connect): it is down or misnamed."""


class ItemFailed(Exception):
    """No reply within the item's deadline, or its request timed out more than retry_timeouts times; the item stays pending."""


class RunStopped(Exception):
    """The run stops cleanly, for the reason its message gives; the item stays pending."""


class BudgetReached(RunStopped):
    """The run's request or token budget is spent; the item stays pending."""


def api_key(cfg: TeacherConfig, environ: Mapping[str, str] | None = None, section: str = "teacher") -> str:
    """The key, from the variable the config names. It is never written anywhere."""
    environ = os.environ if environ is None else environ
    if not cfg.api_key_env:
        return "none"  # local servers (vLLM, Ollama) take any key; the client insists on one
    key = environ.get(cfg.api_key_env, "").strip()
    if not key:
        raise ConfigError(f"the {section}'s API key is not set: export {cfg.api_key_env}=... "
                          f"({section}.api_key_env in tutor.toml names the variable)")
    return key


def retry_after(headers: Mapping[str, str] | None) -> float | None:
    """Seconds a server asked us to wait, if it did: OpenAI's retry-after-ms, else Retry-After in
    seconds or as an HTTP date. None when neither header is there or readable; never negative."""
    if headers is None:
        return None
    if (ms := _seconds(headers.get("retry-after-ms"))) is not None:
        return max(0.0, ms / 1000)
    value = headers.get("retry-after")
    if value is None:
        return None
    if (seconds := _seconds(value)) is not None:
        return max(0.0, seconds)
    try:
        return max(0.0, parsedate_to_datetime(value).timestamp() - time.time())
    except (TypeError, ValueError, IndexError, OverflowError):
        return None


def _seconds(value: str | None) -> float | None:
    """A header's number, if it is a finite one ("inf" would mean waiting for ever)."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


# --- the response log: every reply on disk as soon as it arrives ---------------------------


def request_key(cfg: TeacherConfig, messages: list[dict], salt: str | None = None) -> str:
    """What determines a reply. The stream setting and the server address do not."""
    params = {"temperature": cfg.temperature, "max_tokens": cfg.max_tokens}
    blob = json.dumps([REQUEST_VERSION, cfg.model, params, messages, salt], sort_keys=True, ensure_ascii=False)
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
        # A torn last line: its writer died mid-write (we hold the lock, so no live
        # writer is behind it). Cut it off; that reply is asked for again.
        repair_tail(self.path)
        for _, offset, raw in raw_lines(self.path):
            entry, _ = parse_object(raw)
            if entry and entry.get("key") and "error" not in entry:
                self._index[entry["key"]] = (offset, len(raw))

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


# --- talking to the endpoint: one retry layer -----------------------------------------------


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


class LLMClient:
    """Asks one OpenAI-compatible endpoint, through the openai client, at most `concurrency` requests at once.

    `cfg` holds the endpoint's settings (TeacherConfig's fields); `section` is
    where in tutor.toml they live, to name in messages ("teacher" for
    [teacher] and TUTOR_TEACHER_*). `meta` is added to every log entry.
    """

    def __init__(self, cfg: TeacherConfig, log: ResponseLog, key: str | None = None, *, meta: dict | None = None,
                 section: str = "teacher"):
        import openai

        self.cfg, self.log, self.meta, self.section = cfg, log, meta or {}, section
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
        """The reply to `messages`: from the log if it was ever received, else from the endpoint.

        Raises ItemFailed when the item's deadline (counted from `started`)
        passes or its request timed out too often, RunStopped when the budget
        is spent or most requests time out, RequestRefused when the server
        turns the request down for good, Unreachable when it cannot be
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
                    raise BudgetReached(budget_note(self.cfg, self.usage))
                self.usage.requests += 1
                attempt += 1
                sent = time.monotonic()
                try:
                    async with asyncio.timeout(min(self.cfg.timeout, left)):
                        reply = await self._send(key, messages)
                except self._status_error as err:
                    if err.status_code not in RETRY_STATUSES and err.status_code < 500:
                        raise RequestRefused(f"the {self.section} refused the request: {self._describe(err)}") from None
                    retry_in = await self._failed(err, key, item, attempt, deadline, failures)
                except self._retryable as err:
                    retry_in = await self._failed(err, key, item, attempt, deadline, failures)
                else:
                    self._recent.append(False)
                    self.usage.prompt_tokens += reply.prompt_tokens
                    self.usage.completion_tokens += reply.completion_tokens
                    entry = {"key": key, "at": timestamp(), "model": self.cfg.model, **self.meta, "item": item,
                             "content": reply.content, "reasoning": reply.reasoning, "finish_reason": reply.finish_reason,
                             "seconds": round(time.monotonic() - sent, 3),
                             "usage": {"prompt_tokens": reply.prompt_tokens, "completion_tokens": reply.completion_tokens}}
                    # On disk before anything else happens to it: from here on it is never paid for again.
                    await self.write(self.log.append, entry)
                    return reply
            await asyncio.sleep(retry_in)  # outside the slot: a waiting item does not hold back the others

    async def _failed(self, err: BaseException, key: str, item: str, attempt: int, deadline: float, failures: Counter) -> float:
        """Log a failed attempt and decide what follows it: the seconds to wait before the next one;
        ItemFailed when this item gives up; RunStopped or Unreachable when the whole run does."""
        cfg, section, reason, kind = self.cfg, self.section, self._describe(err), _error_kind(err)
        failures[kind] += 1
        self.usage.errors[kind] += 1
        if kind in ("timeout", "malformed", "connection"):  # the server had the request, and no reply was saved
            self.usage.maybe_billed += 1
        await self.write(self.log.append, {"key": key, "at": timestamp(), "error": reason, **self.meta, "item": item})
        if kind == "connect":  # never reached the server: nothing billed, and nothing gained by waiting long
            if failures[kind] >= CONNECT_ATTEMPTS:
                raise Unreachable(f"cannot connect to the {section} at {cfg.base_url} ({reason}, {failures[kind]} tries): is it running, "
                                  f"and is that its address? Set {section}.base_url in tutor.toml or TUTOR_{section.upper()}_BASE_URL")
        else:
            self._recent.append(kind == "timeout")
            timeouts = sum(self._recent)
            if self.stopping is None and len(self._recent) >= TIMEOUT_STOP_AFTER and 2 * timeouts > len(self._recent):
                self.stopping = (f"most requests time out ({timeouts} of the last {len(self._recent)} got no reply within the "
                                 f"{cfg.timeout:g} s request timeout) at {cfg.base_url}; each may be billed all the same. "
                                 f"If the {section} is just slow, raise {section}.timeout (TUTOR_{section.upper()}_TIMEOUT)")
            if self.stopping:
                raise RunStopped(self.stopping)
        if kind == "timeout" and failures[kind] > cfg.retry_timeouts:
            raise ItemFailed(f"{reason} (sent {failures[kind]}x); not re-sent, to avoid paying twice (the {section} may bill a request "
                             f"it was still working on): raise {section}.timeout to wait longer, or {section}.retry_timeouts "
                             f"(now {cfg.retry_timeouts}) to re-send more")
        pause = retry_after(getattr(getattr(err, "response", None), "headers", None))
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


def budget_note(cfg: TeacherConfig, usage: Usage) -> str:
    return (f"the budget is spent ({usage.requests} requests of {cfg.budget_requests if cfg.budget_requests is not None else 'any'}, "
            f"{usage.tokens} tokens of {cfg.budget_tokens if cfg.budget_tokens is not None else 'any'}); raise it to go on")


def _tokens(usage, messages: list[dict], content: str, reasoning: str | None) -> tuple[int, int]:
    if usage is not None:
        return usage.prompt_tokens or 0, usage.completion_tokens or 0
    # A server that reports no usage: about four characters a token.
    return sum(len(m["content"]) for m in messages) // 4, (len(content) + len(reasoning or "")) // 4


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


def timestamp() -> str:
    """Now, in UTC, to the second: when a log entry was written."""
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




# --- a run over many items: bounded, stoppable --------------------------------------------------


async def run_items(items: Iterable, handle: Callable[[object], Awaitable[None]], width: int, stop: Callable[[], bool]) -> None:
    """handle(item) for each item, at most `width` at once, reading `items` lazily.

    Items are pulled only as slots free up, so memory stays flat however long
    the input is. A failure that escapes `handle` (the endpoint refused for good
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
