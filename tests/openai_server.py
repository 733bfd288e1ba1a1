"""A real OpenAI-compatible chat-completions server on 127.0.0.1, for the teach tests and benchmark.

It speaks `POST /v1/chat/completions` over HTTP/1.1 (keep-alive), plain JSON
or streamed as server-sent events (chunked, `stream_options.include_usage`
honoured), and plays a teacher model: by default it writes a reply that a
validator accepts, read off the prompt itself (the word band, the MCQ key,
whether a diagram is required; for a diagram prompt, the format's own example
body). Tests script what goes wrong, request by request:

    server = TeacherServer().start()
    server.then(rate_limited(retry_after=0.2), error(500), ok("text"))
    server.hold_after(3)     # answer 3 requests, then hang every later one
    server.always(error(401))  # every request past the script gets this action
    server.pause()           # hold every request (unanswered) until resume()
    server.requests          # every request seen: prompt digest, outcome, time
    server.completed         # Counter: prompt digest -> responses delivered

A digest is of the messages sent, so "no prompt answered twice" is a check
on `server.completed`. Run it alone for the benchmark:

    python tests/openai_server.py --latency 1      # prints "PORT <n>", serves until killed

Streams can be slowed (`stream_delay` seconds between events, `piece_size`
characters of content per event), and `echo_model` starts every reply with
"[<the request's model>] ", for a stand-in of a server that serves several
models (tests of `tutor serve --engine vllm`).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import re
import threading
import time
from collections import Counter, deque
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class Action:
    """What the server does with one request."""

    kind: str = "ok"  # ok | rate-limited | error | hang | malformed
    content: str | None = None  # None: the default reply for the prompt
    reasoning: str | None = None  # sent as DeepSeek's `reasoning_content`
    think: str | None = None  # sent inside <think>...</think> at the start of the content
    delay: float = 0.0  # seconds before answering, on top of the server's latency
    status: int = 500
    retry_after: float | None = None
    finish_reason: str = "stop"


def ok(content: str | None = None, **kwargs) -> Action:
    return Action("ok", content, **kwargs)


def delay(seconds: float, content: str | None = None) -> Action:
    return Action("ok", content, delay=seconds)


def rate_limited(retry_after: float = 1.0) -> Action:
    return Action("rate-limited", status=429, retry_after=retry_after)


def error(status: int = 500) -> Action:
    return Action("error", status=status)


def hang() -> Action:
    """Accept the request and never answer (until the server stops or is released)."""
    return Action("hang")


def malformed() -> Action:
    """A 200 whose body is not the JSON (or the event stream) of a chat completion."""
    return Action("malformed")


def empty() -> Action:
    return Action("ok", "")


def huge(words: int = 200_000) -> Action:
    return Action("ok", " ".join(["energy"] * words))


@dataclass
class Seen:
    digest: str
    stream: bool
    outcome: str
    at: float
    prompt: str = field(repr=False)  # the last message's content
    authorization: str | None = field(default=None, repr=False)


def digest(messages: list[dict]) -> str:
    return hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:16]


FILLER = ("The force on the body equals the rate of change of its momentum, so the resultant force and the "
          "acceleration act in the same direction and the energy transferred is the work done").split()


def default_reply(messages: list[dict]) -> str:
    """A reply a teacher's validator accepts, from what the prompt asks for."""
    prompt = "\n".join(m.get("content") or "" for m in messages)
    if "Draw this diagram in" in prompt:
        example = re.search(r"```latex\n(.*?)```", prompt, re.DOTALL)
        return f"```latex\n{example.group(1).strip() if example else ''}\n```"
    band = re.search(r"Length: about (\d+) to (\d+) words", prompt)
    words = (int(band.group(1)) + int(band.group(2))) // 2 if band else 60
    text = " ".join(FILLER[i % len(FILLER)] for i in range(words))
    if "includes at least one" in prompt:  # the diagram rule of a type whose answers require one
        text += "\n\n(DIAGRAM: A labelled sketch of the apparatus, with the ruler beside the spring.)"
    if key := re.search(r"^Key: ([A-Z])$", prompt, re.MULTILINE):
        text += f"\n\nAnswer: {key.group(1)}"
    return text


class TeacherServer:
    def __init__(self, latency: float = 0.0, reply=default_reply, *, stream_delay: float = 0.0, piece_size: int = 400,
                 echo_model: bool = False):
        self.latency, self.reply = latency, reply
        self.stream_delay, self.piece_size, self.echo_model = stream_delay, piece_size, echo_model
        self.script: deque[Action] = deque()
        self.requests: list[Seen] = []
        self.completed: Counter[str] = Counter()
        self._answer_limit: int | None = None
        self._always: Action | None = None
        self._running = threading.Event()
        self._running.set()
        self._release = threading.Event()
        self._lock = threading.Lock()
        self.in_flight = self.max_in_flight = 0
        self._httpd: ThreadingHTTPServer | None = None

    # --- control, from tests ------------------------------------------------------------

    def then(self, *actions: Action) -> TeacherServer:
        """The next requests get these actions, in order; later ones the default."""
        with self._lock:
            self.script.extend(actions)
        return self

    def always(self, action: Action | None) -> TeacherServer:
        """Every request past the script gets this action (None: the default reply again)."""
        self._always = action
        return self

    def pause(self) -> TeacherServer:
        """Hold every request, before its action, until resume(): then they are answered all at once."""
        self._running.clear()
        return self

    def resume(self) -> None:
        self._running.set()

    def hold_after(self, answered: int) -> None:
        """Answer this many requests in all, then hang every later one until release()."""
        self._release = threading.Event()
        self._answer_limit = answered

    def release(self) -> None:
        """Hung requests end (their connections close unanswered); new ones are answered again."""
        self._answer_limit = None
        self._release.set()

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    @property
    def port(self) -> int:
        return self._httpd.server_address[1]

    def outcomes(self) -> Counter[str]:
        return Counter(seen.outcome for seen in self.requests)

    def start(self, port: int = 0) -> TeacherServer:
        server = self

        class Handler(_Handler):
            teacher = server

        class Server(ThreadingHTTPServer):
            request_queue_size = 256  # the default 5 drops connections when many clients connect at once

        self._httpd = Server(("127.0.0.1", port), Handler)
        self._httpd.daemon_threads = True
        threading.Thread(target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True).start()
        return self

    def stop(self) -> None:
        self._release.set()
        self._running.set()
        if self._httpd:
            self._httpd.shutdown()
            self._httpd.server_close()

    def __enter__(self) -> TeacherServer:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # --- serving ----------------------------------------------------------------------

    def _next_action(self, messages: list[dict], stream: bool, authorization: str | None) -> tuple[Action, Seen]:
        with self._lock:
            answered = sum(self.completed.values()) + sum(1 for s in self.requests if s.outcome == "answering")
            if self._answer_limit is not None and answered >= self._answer_limit:
                action = hang()
            else:
                action = self.script.popleft() if self.script else (self._always or Action())
            seen = Seen(digest(messages), stream, "answering" if action.kind == "ok" else action.kind, time.time(),
                        messages[-1].get("content", "") if messages else "", authorization)
            self.requests.append(seen)
        return action, seen

    def _delivered(self, seen: Seen) -> None:
        with self._lock:
            seen.outcome = "answered"
            self.completed[seen.digest] += 1


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"  # keep-alive, as a real API: the client pools connections
    teacher: TeacherServer

    def log_message(self, *args) -> None:  # quiet
        pass

    def do_GET(self) -> None:
        if self.path.rstrip("/") == "/health":  # as vLLM's server answers once it is ready (tests of eval's vLLM engine)
            return self._json(200, {})
        if self.path.rstrip("/") == "/v1/models":
            return self._json(200, {"object": "list", "data": [{"id": "teacher-test", "object": "model", "owned_by": "tests"}]})
        self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = json.loads(self.rfile.read(length) or b"{}")
        if self.path.rstrip("/") != "/v1/chat/completions":
            return self._json(404, {"error": {"message": f"no route {self.path}", "type": "not_found"}})
        messages, stream = body.get("messages") or [], bool(body.get("stream"))
        teacher = self.teacher
        action, seen = teacher._next_action(messages, stream, self.headers.get("Authorization"))
        teacher._running.wait(timeout=120)
        with teacher._lock:
            teacher.in_flight += 1
            teacher.max_in_flight = max(teacher.max_in_flight, teacher.in_flight)
        try:
            self._serve(body, messages, stream, action, seen)
        except (BrokenPipeError, ConnectionResetError):  # the client gave up first (a timeout, a cancelled run)
            self.close_connection = True
        finally:
            with teacher._lock:
                teacher.in_flight -= 1

    def _serve(self, body: dict, messages: list[dict], stream: bool, action: Action, seen: Seen) -> None:
        teacher = self.teacher
        if action.kind == "hang":
            teacher._release.wait(timeout=120)
            self.close_connection = True
            return
        time.sleep(teacher.latency + action.delay)
        if action.kind == "rate-limited":
            headers = {"Retry-After": f"{action.retry_after:g}"} if action.retry_after is not None else {}
            return self._json(429, {"error": {"message": "Rate limit reached", "type": "rate_limit_error"}}, headers)
        if action.kind == "error":
            key = (self.headers.get("Authorization") or "").removeprefix("Bearer ")
            message = f"Incorrect API key provided: {key}" if action.status == 401 else "The server had an error"
            return self._json(action.status, {"error": {"message": message, "type": "server_error"}})
        if action.kind == "malformed":
            if stream:
                return self._events(['{"id": "x", "choices": [{"delta": {"content": "trunc'])
            return self._raw(200, b'{"id": "chatcmpl-x", "choices": [{"message": {"content": "trunc', "application/json")

        content = teacher.reply(messages) if action.content is None else action.content
        if action.think is not None:
            content = f"<think>{action.think}</think>\n{content}"
        if teacher.echo_model:
            content = f"[{body.get('model')}] {content}"
        prompt_tokens = sum(len(m.get("content") or "") for m in messages) // 4 + 1
        completion_tokens = (len(content) + len(action.reasoning or "")) // 4 + 1
        usage = {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens, "total_tokens": prompt_tokens + completion_tokens}
        base = {"id": f"chatcmpl-{seen.digest}", "created": int(time.time()), "model": body.get("model", "teacher-test")}
        try:
            if not stream:
                message = {"role": "assistant", "content": content}
                if action.reasoning is not None:
                    message["reasoning_content"] = action.reasoning
                self._json(200, {**base, "object": "chat.completion", "usage": usage,
                                 "choices": [{"index": 0, "message": message, "finish_reason": action.finish_reason}]})
            else:
                chunk = {**base, "object": "chat.completion.chunk"}
                events = [{**chunk, "choices": [{"index": 0, "delta": {"role": "assistant", "content": ""}, "finish_reason": None}]}]
                for piece in _pieces(action.reasoning or ""):
                    events.append({**chunk, "choices": [{"index": 0, "delta": {"reasoning_content": piece}, "finish_reason": None}]})
                for piece in _pieces(content, teacher.piece_size):
                    events.append({**chunk, "choices": [{"index": 0, "delta": {"content": piece}, "finish_reason": None}]})
                events.append({**chunk, "choices": [{"index": 0, "delta": {}, "finish_reason": action.finish_reason}]})
                if (body.get("stream_options") or {}).get("include_usage"):
                    events.append({**chunk, "choices": [], "usage": usage})
                self._events([json.dumps(e) for e in events] + ["[DONE]"])
        except OSError:  # the client went away mid-reply: not delivered
            seen.outcome = "abandoned"
            self.close_connection = True  # nothing more can come on it
            return
        teacher._delivered(seen)

    # --- writing ------------------------------------------------------------------------

    def _json(self, status: int, data: dict, headers: dict | None = None) -> None:
        self._raw(status, json.dumps(data).encode(), "application/json", headers)

    def _raw(self, status: int, payload: bytes, content_type: str, headers: dict | None = None) -> None:
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)
        self.wfile.flush()

    def _events(self, datas: list[str]) -> None:
        self.send_response(200)
        self.send_header("Content-Type", "text/event-stream")
        self.send_header("Transfer-Encoding", "chunked")
        self.end_headers()
        for n, data in enumerate(datas):
            if n and self.teacher.stream_delay:
                time.sleep(self.teacher.stream_delay)
            event = f"data: {data}\n\n".encode()
            self.wfile.write(b"%x\r\n%s\r\n" % (len(event), event))
            self.wfile.flush()
        self.wfile.write(b"0\r\n\r\n")
        self.wfile.flush()


def record_bodies(monkeypatch) -> list[dict]:
    """Every request's JSON body, appended to the list returned, for the rest of the test (the handler still answers it)."""
    import io

    bodies: list[dict] = []
    post = _Handler.do_POST

    def recording_post(handler):
        raw = handler.rfile.read(int(handler.headers.get("Content-Length") or 0))
        bodies.append(json.loads(raw))
        real, handler.rfile = handler.rfile, io.BytesIO(raw)  # the handler reads the body again
        try:
            post(handler)
        finally:
            handler.rfile = real

    monkeypatch.setattr(_Handler, "do_POST", recording_post)
    return bodies


def _pieces(text: str, size: int = 400) -> list[str]:
    return [text[i:i + size] for i in range(0, len(text), size)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--latency", type=float, default=0.0, help="Seconds before each reply.")
    parser.add_argument("--stream-delay", type=float, default=0.0, help="Seconds between the events of a streamed reply.")
    parser.add_argument("--piece-size", type=int, default=400, help="Characters of content per streamed event.")
    parser.add_argument("--echo-model", action="store_true", help="Start each reply with '[<the model asked for>] '.")
    args = parser.parse_args()
    server = TeacherServer(latency=args.latency, stream_delay=args.stream_delay, piece_size=args.piece_size,
                           echo_model=args.echo_model).start(args.port)
    print(f"PORT {server.port}", flush=True)
    try:
        threading.Event().wait()
    except KeyboardInterrupt:
        server.stop()


if __name__ == "__main__":
    main()
