"""The HTTP side of `tutor serve`: OpenAI's chat-completions API on FastAPI, with its limits.

Routes: GET /health (no key needed), GET /v1/models, POST /v1/chat/completions
(plain JSON, or server-sent events with `stream`, ending in `data: [DONE]`,
with a usage chunk when `stream_options.include_usage`). Errors come in
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
from fastapi.responses import JSONResponse
from pydantic import ConfigDict, Field, ValidationError
from sse_starlette.sse import EventSourceResponse

from ..config import ServeConfig
from ..models import Model
from .backend import Backend


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
    n: int = Field(default=1, ge=1, le=1)
    user: str | None = None


def error(status: int, message: str, *, kind: str = "invalid_request_error", param: str | None = None, code: str | None = None,
          headers: dict | None = None):
    return JSONResponse({"error": {"message": message, "type": kind, "param": param, "code": code}}, status_code=status, headers=headers)


def create_app(backend: Backend, settings: ServeConfig, keys: list[str]):
    """The FastAPI application serving `backend` within `settings`' limits, to clients with one of `keys`."""
    app = FastAPI(title="tutor", docs_url=None, redoc_url=None, openapi_url=None)
    state = {"waiting": 0, "requests": 0, "tokens": 0, "busy_seconds": 0.0}
    slots = asyncio.Semaphore(1)  # one generation at a time in this version; `queue` bounds who may wait for it

    @app.middleware("http")
    async def guard(request: Request, call_next):
        if request.url.path != "/health":
            given = request.headers.get("authorization", "").removeprefix("Bearer ").strip()
            if not keys or not any(hmac.compare_digest(given.encode(), key.encode()) for key in keys):
                return error(401, "a valid API key is needed: Authorization: Bearer <key> (keys: TUTOR_API_KEYS or "
                                  "[serve] api_key_file)", kind="authentication_error", code="invalid_api_key")
        if int(request.headers.get("content-length") or 0) > settings.max_body_bytes:
            return error(413, f"the body is over the {settings.max_body_bytes} bytes allowed", param="body")
        return await call_next(request)

    @app.get("/health")
    async def health():
        return {"status": "ok", "models": list(backend.models), "waiting": state["waiting"]}

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
            first = err.errors()[0]
            where = ".".join(str(part) for part in first["loc"]) or None
            return error(400, f"{where or 'body'}: {first['msg']}", param=where)
        served = backend.models.get(req.model)
        if served is None:
            return error(404, f"The model `{req.model}` does not exist; served: {', '.join(backend.models)}", code="model_not_found")
        if len(req.messages) > settings.max_messages:
            return error(400, f"{len(req.messages)} messages is over the limit of {settings.max_messages}", param="messages")
        messages = [{"role": m.role, "content": m.content} for m in req.messages]
        prompt = backend.prompt_tokens(messages)
        if len(prompt) > settings.max_prompt_tokens:
            return error(400, f"the prompt is {len(prompt)} tokens, over the limit of {settings.max_prompt_tokens}", param="messages")
        if state["waiting"] >= settings.queue:
            return error(429, f"the server is busy: {settings.queue} requests are already waiting or running", kind="rate_limit_error",
                         code="queue_full", headers={"Retry-After": "1"})
        max_tokens = min(req.max_completion_tokens or req.max_tokens or settings.max_tokens, settings.max_tokens)
        stop = [req.stop] if isinstance(req.stop, str) else req.stop
        ident, created = f"chatcmpl-{uuid.uuid4().hex[:24]}", int(time.time())
        options = {"max_tokens": max_tokens, "temperature": req.temperature, "top_p": req.top_p, "seed": req.seed, "stop": stop}
        state["waiting"] += 1
        gone = {"cancelled": False}

        async def run(on_text=None):
            started = time.monotonic()
            try:
                async with asyncio.timeout(settings.timeout):
                    async with slots:
                        output = await run_in_threadpool(backend.generate, served, prompt, on_text=on_text,
                                                         cancelled=lambda: gone["cancelled"], **options)
            except TimeoutError:
                gone["cancelled"] = True
                raise
            finally:
                state["waiting"] -= 1
                state["busy_seconds"] += time.monotonic() - started
            state["requests"] += 1
            state["tokens"] += output.completion_tokens
            return output

        def usage(output):
            return {"prompt_tokens": output.prompt_tokens, "completion_tokens": output.completion_tokens,
                    "total_tokens": output.prompt_tokens + output.completion_tokens}

        if not req.stream:
            try:
                output = await run()
            except TimeoutError:
                return error(504, f"no reply within the {settings.timeout:g} s request timeout", kind="timeout", code="timeout")
            return {"id": ident, "object": "chat.completion", "created": created, "model": req.model,
                    "choices": [{"index": 0, "message": {"role": "assistant", "content": output.text},
                                 "finish_reason": output.finish_reason}], "usage": usage(output)}

        loop = asyncio.get_running_loop()
        pieces: asyncio.Queue = asyncio.Queue()

        def chunk(delta: dict, finish: str | None = None, **extra) -> str:
            return json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                               "choices": [{"index": 0, "delta": delta, "finish_reason": finish}], **extra})

        async def events():
            task = asyncio.create_task(run(on_text=lambda piece: loop.call_soon_threadsafe(pieces.put_nowait, piece)))
            try:
                yield {"data": chunk({"role": "assistant", "content": ""})}
                while not task.done() or not pieces.empty():
                    getter = asyncio.ensure_future(pieces.get())
                    done, _ = await asyncio.wait({getter, task}, return_when=asyncio.FIRST_COMPLETED)
                    if getter in done:
                        yield {"data": chunk({"content": getter.result()})}
                    else:
                        getter.cancel()
                output = await task
                yield {"data": chunk({}, output.finish_reason)}
                if req.stream_options and req.stream_options.include_usage:
                    yield {"data": json.dumps({"id": ident, "object": "chat.completion.chunk", "created": created, "model": req.model,
                                               "choices": [], "usage": usage(output)})}
                yield {"data": "[DONE]"}
            finally:  # the client went away (or the stream ended): stop generating at the next token
                gone["cancelled"] = True
                if not task.done():
                    try:
                        await task
                    except Exception:  # noqa: BLE001, S110 - its error has nobody left to go to
                        pass

        return EventSourceResponse(events(), ping=15)

    return app
