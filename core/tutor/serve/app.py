"""The HTTP side of `tutor serve`: OpenAI's chat-completions API on FastAPI, with its limits.

Routes: GET /health (no key needed), GET /metrics, GET /v1/models, POST
/v1/chat/completions (plain JSON, or server-sent events with `stream`, ending
in `data: [DONE]`, with a usage chunk when `stream_options.include_usage`);
the tutor modes and diagrams (tutor_api.py) and the web page (web.py). Errors come in
OpenAI's shape, {"error": {"message", "type", "param", "code"}}: an unknown
model is 404 `model_not_found` (never a silent fallback to the base), a bad
body 400 naming the field, a missing or wrong key 401, a full queue 429 with
Retry-After.

Imported only by `tutor serve` (FastAPI is the `serve` extra's), so at the top.

Limits (config.ServeConfig, `[serve]` in tutor.toml): max_tokens is capped, the
body, the messages and the prompt's tokens are bounded, at most `queue`
requests wait or run, and each has a timeout. A streaming client that goes
away stops its generation at the next token.
"""

from __future__ import annotations

import asyncio
import hmac
import json
import time
import uuid
from typing import Literal

from fastapi import FastAPI, Request  # at the top: FastAPI reads the handlers' annotations from this module's names
from fastapi.concurrency import run_in_threadpool
from pydantic import ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from ..config import ServeConfig
from ..errors import TutorError
from ..models import Model
from . import tutor_api, web
from .backend import Backend
from .responses import bad_body, error


class Message(Model):
    model_config = ConfigDict(extra="forbid")

    role: Literal["system", "user", "assistant"]
    content: str
    name: str | None = None


class StreamOptions(Model):
    model_config = ConfigDict(extra="forbid")

    include_usage: bool = False


class ChatRequest(Model):
    """The chat-completions body this server understands; any other field is a 400, not silently ignored."""

    model_config = ConfigDict(extra="forbid")

    model: str
    messages: list[Message] = Field(min_length=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    stop: str | list[str] | None = None
    seed: int | None = None
    ignore_eos: bool = False  # vLLM's extension: run to max_tokens (what throughput benchmarks ask for)
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None


class Gate:
    """Admission for every route that runs the model: at most `queue` requests waiting or running, each within the timeout."""

    def __init__(self, settings: ServeConfig):
        self.settings, self.waiting = settings, 0

    def full(self):
        """The 429 to send when the queue is full, else None."""
        if self.waiting >= self.settings.queue:
            return error(429, f"the server is busy: {self.settings.queue} requests are already waiting or running", kind="rate_limit_error",
                         code="queue_full", headers={"Retry-After": "1"})
        return None

    async def run(self, work, gone: dict, on_text=None):
        """`work(on_text, cancelled)` in a worker thread, counted in the queue; past the timeout it is told to stop and TimeoutError
        is raised. The caller checked `full()` just before, with no await in between."""
        self.waiting += 1
        try:
            async with asyncio.timeout(self.settings.timeout):
                return await run_in_threadpool(work, on_text, lambda: gone["cancelled"])
        except TimeoutError:
            gone["cancelled"] = True
            raise
        finally:
            self.waiting -= 1

    def timed_out(self):
        return error(504, f"no reply within the {self.settings.timeout:g} s request timeout", kind="timeout", code="timeout")

    def events(self, work, gone: dict, first=None, piece=None, last=None):
        """Server-sent events for `work` run as in `run`: `first` (an event or None), `piece(text)` per delta, `last(result)`'s
        events, then [DONE]. A client that goes away (or the end) sets gone['cancelled'], so the work stops at its next step."""
        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        async def events():
            task = asyncio.create_task(self.run(work, gone, on_text=lambda text: loop.call_soon_threadsafe(pieces.put_nowait, text)))
            try:
                if first is not None:
                    yield {"data": first}
                while not task.done() or not pieces.empty():
                    getter = asyncio.ensure_future(pieces.get())
                    done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield {"data": piece(getter.result())}
                    else:
                        getter.cancel()
                try:
                    result = await task
                except TimeoutError:
                    yield {"data": json.dumps({"error": {"message": f"no reply within the {self.settings.timeout:g} s request timeout",
                                                         "type": "timeout", "code": "timeout"}})}
                except TutorError as err:
                    yield {"data": json.dumps({"error": {"message": str(err), "type": "invalid_request_error", "code": None}})}
                else:
                    for event in last(result):
                        yield {"data": event}
                yield {"data": "[DONE]"}
            finally:
                gone["cancelled"] = True
                if not task.done():
                    try:
                        await task
                    except Exception:  # noqa: BLE001, S110 - its error has nobody left to go to
                        pass

        return EventSourceResponse(events(), ping=15)


def create_app(backend: Backend, settings: ServeConfig, keys: list[str]):
    """The FastAPI application serving `backend` within `settings`' limits, to clients with one of `keys`."""
    app = FastAPI(title="tutor", docs_url=None, redoc_url=None, openapi_url=None)
    gate = Gate(settings)

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path != "/health" and not web.is_page(request.url.path):
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not keys or not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
                return error(401, "a valid API key is needed: Authorization: Bearer <key> (keys: TUTOR_API_KEYS or "
                                  "[serve] api_key_file)", kind="authentication_error", code="invalid_api_key")
        if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
            return error(413, f"the body is over the {settings.max_body_bytes} bytes allowed", param="body")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(backend.models), "waiting": gate.waiting}

    @app.get("/metrics")
    async def metrics():
        return {"waiting": gate.waiting, "queue": settings.queue, **backend.metrics()}

    @app.get("/v1/models")
    async def models():
        return {"object": "list", "data": [{"id": name, "object": "model", "created": 0, "owned_by": "tutor",
                                            "subject": served.subject, "role": served.role} for name, served in backend.models.items()]}

    @app.post("/v1/chat/completions")
    async def chat(request: Request):
        body = await request.body()
        if len(body) > settings.max_body_bytes:
            return error(413, f"the body is over the {settings.max_body_bytes} bytes allowed", param="body")
        try:
            req = ChatRequest.model_validate_json(body)
        except ValidationError as err:
            return bad_body(err)
        served = backend.models.get(req.model)
        if served is None:
            return error(404, f"The model `{req.model}` does not exist; served: {', '.join(backend.models)}", code="model_not_found")
        if len(req.messages) > settings.max_messages:
            return error(400, f"{len(req.messages)} messages is over the limit of {settings.max_messages}", param="messages")
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        prompt = backend.prompt_tokens(messages)
        if len(prompt) > settings.max_prompt_tokens:
            return error(400, f"the prompt is {len(prompt)} tokens, over the limit of {settings.max_prompt_tokens}", param="messages")
        if busy := gate.full():
            return busy
        max_tokens = min(req.max_completion_tokens or req.max_tokens or settings.max_tokens, settings.max_tokens)
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        options = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed, "stop": stop}
        if req.ignore_eos:
            options["ignore_eos"] = True
        gone = {"cancelled": False}

        def work(on_text, cancelled):
            return backend.generate(served, prompt, on_text=on_text, messages=messages, cancelled=cancelled, **options)

        def usage(output):
            return {"prompt_tokens": output.prompt_tokens, "completion_tokens": output.completion_tokens,
                    "total_tokens": output.prompt_tokens + output.completion_tokens}

        if not req.stream:
            try:
                output = await gate.run(work, gone)
            except TimeoutError:
                return gate.timed_out()
            return {"id": ident, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": output.text},
                                 "finish_reason": output.finish_reason}], "usage": usage(output)}

        def chunk(delta: dict, finish: str | None = None) -> str:
            return json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}]})

        def last(output):
            yield chunk({}, output.finish_reason)
            if req.stream_options and req.stream_options.include_usage:
                yield json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                                  "choices": [], "usage": usage(output)})

        return gate.events(work, gone, first=chunk({"role": "assistant", "content": ""}), piece=lambda text: chunk({"content": text}),
                           last=last)

    tutor_api.add_routes(app, backend, settings, gate)
    web.add_routes(app)
    return app
