"""The tutor modes over HTTP: /v1/tutor/{answer,explain,set,mark,plan}, the subjects' pickers, and diagrams.

Each route runs infer.tutor.Tutor on the server's own model (ServedEngine:
the batcher, so tutor requests share decoding steps with chat requests) and
answers with the mode's pydantic result, as the CLI's --json prints it.
answer and explain stream with `"stream": true`: `data: {"delta": ...}`
events, then `data: {"result": ...}`, then `data: [DONE]`.

Diagrams are compiled by the sandboxed renderer into its content-addressed
cache; a picture is served as /v1/diagrams/<key>.png (or .svg), the key being
the renderer's sha256 of the code, so a result names no path on the server.
"""

from __future__ import annotations

import copy
import json
import re
import tempfile
from pathlib import Path
from typing import Literal

from fastapi import Request
from pydantic import ConfigDict, Field, ValidationError

from ..errors import TutorError
from ..infer.engine import Completion
from ..models import Model
from .responses import bad_body, error

KEY = re.compile(r"[0-9a-f]{64}")


class Body(Model):
    model_config = ConfigDict(extra="forbid")

    subject: str


class TextBody(Body):
    text: str | None = Field(default=None, max_length=20_000)
    question_id: str | None = None
    diagrams: bool = False
    stream: bool = False
    rag: bool | None = None  # the knowledge base's chunks in the prompt; None: on when the subject has one


class MarkBody(Body):
    question_id: str
    answer: str = Field(max_length=50_000)
    student: str | None = None
    rag: bool | None = None


class SetBody(Body):
    type: str
    topic: str | None = None
    count: int = Field(default=1, ge=1, le=5)
    gold: bool = False


class PlanBody(Body):
    results: list[dict] = Field(min_length=1, max_length=10_000)
    days: int = Field(default=7, ge=1, le=60)
    student: str | None = None


class DiagramBody(Body):
    code: str | None = Field(default=None, max_length=100_000)
    description: str | None = Field(default=None, max_length=2_000)
    format: str | None = None


class ServedEngine:
    """A Tutor engine on the server's model: each completion is one request to the batcher, for `cancelled` to stop."""

    label = "served"

    def __init__(self, backend, subject: str, max_tokens: int, cancelled=lambda: False):
        self.backend, self.subject, self.max_tokens, self.cancelled = backend, subject, max_tokens, cancelled

    def complete(self, messages: list[dict[str, str]], *, role: str = "answer", on_text=None, max_new_tokens: int | None = None,
                 item: str = "") -> Completion:
        name = self.subject if role == "answer" else f"{self.subject}:{role}"
        served = self.backend.models.get(name)
        if served is None:
            raise TutorError(f"{self.subject} has no {role} adapter on this server: train one with "
                             f"`tutor --subject {self.subject} train --role {role}` and restart `tutor serve`")
        output = self.backend.generate(served, self.backend.prompt_tokens(messages), messages=messages, on_text=on_text,
                                       max_tokens=min(max_new_tokens or self.max_tokens, self.max_tokens), cancelled=self.cancelled)
        if output.finish_reason == "cancelled":
            raise TutorError("the request was cancelled")
        return Completion(output.text.strip(), output.finish_reason == "length", served.adapter.name if served.adapter else "base")


def picture_url(path: str | None) -> str | None:
    """/v1/diagrams/<key>.png for a picture in the renderer's cache (its folder is the key)."""
    if not path:
        return None
    where = Path(path)
    return f"/v1/diagrams/{where.parent.name}{where.suffix}" if KEY.fullmatch(where.parent.name) else None


def public(result):
    """A mode's result as JSON, with each diagram's paths on this server replaced by its URL (a lone diagram also gets its
    key); anything else (a dict, an error response) as it is."""
    from ..infer.results import DiagramResult

    if not hasattr(result, "model_dump"):
        return result
    data = result.model_dump(mode="json")
    for drawn in data.get("diagrams", []):
        drawn["png"], drawn["svg"] = picture_url(drawn.get("png")), picture_url(drawn.get("svg"))
    if isinstance(result, DiagramResult):
        data["png"], data["svg"] = picture_url(result.png), picture_url(result.svg)
        data["key"] = Path(result.png).parent.name if result.png else None
    return data


def add_routes(app, backend, settings, gate) -> None:
    workspace = backend.workspace
    tutors: dict = {}

    def tutor_for(subject: str, cancelled=lambda: False, rag: bool | None = None):
        """The subject's Tutor (its bank and knowledge base opened once) on a per-request engine."""
        from ..infer.tutor import Tutor

        if subject not in tutors:
            made = Tutor(subject, workspace, engine=ServedEngine(backend, subject, settings.max_tokens))
            made.bank  # noqa: B018 - read once here, shared by the copies
            made.knowledge_base()
            tutors[subject] = made
        one = copy.copy(tutors[subject])
        one.engine = ServedEngine(backend, subject, settings.max_tokens, cancelled)
        one.rag = rag
        return one

    def served_subjects() -> list[str]:
        return sorted({s.subject for s in backend.models.values() if s.subject})

    async def parse(request: Request, kind: type[Body]):
        """(the body, None) or (None, the error response): 400 naming the field, 404 for a subject not served."""
        raw = await request.body()
        if len(raw) > settings.max_body_bytes:
            return None, error(413, f"the body is over the {settings.max_body_bytes} bytes allowed", param="body")
        try:
            body = kind.model_validate_json(raw)
        except ValidationError as err:
            return None, bad_body(err)
        if body.subject not in served_subjects():
            return None, error(404, f"the subject `{body.subject}` is not served; served: {', '.join(served_subjects()) or '(none)'}",
                               param="subject", code="model_not_found")
        return body, None

    def failed(err: TutorError):
        return error(400, str(err), param="question_id" if "question id" in str(err) else None)

    async def run(work, gone=None):
        """The mode's result as JSON, or its error."""
        if busy := gate.full():
            return busy
        try:
            return public(await gate.run(lambda _on_text, cancelled: work(cancelled), gone or {"cancelled": False}))
        except TimeoutError:
            return gate.timed_out()
        except TutorError as err:
            return failed(err)

    @app.get("/v1/tutor/subjects/{subject}")
    async def subject_info(subject: str):
        if subject not in served_subjects():
            return error(404, f"the subject `{subject}` is not served; served: {', '.join(served_subjects()) or '(none)'}",
                         param="subject", code="model_not_found")
        from ..answers import question_text

        tutor = tutor_for(subject)
        kit = tutor.kit
        return {"name": kit.name, "topics": list(kit.subject.topics), "knowledge_base": tutor.knowledge_base().exists(),
                "types": [{"id": t.id, "name": t.name} for t in kit.types.values()],
                "questions": [{"id": q.id, "type": q.type, "topic": q.topic, "marks": q.marks, "text": question_text(q)}
                              for q in tutor.bank.questions]}

    def text_route(mode: Literal["answer", "explain"]):
        async def route(request: Request):
            body, problem = await parse(request, TextBody)
            if problem:
                return problem
            gone = {"cancelled": False}

            def work(on_text, cancelled):
                tutor = tutor_for(body.subject, cancelled, body.rag)
                return getattr(tutor, mode)(body.text, question_id=body.question_id, diagrams=body.diagrams, on_text=on_text)

            if not body.stream:
                return await run(lambda cancelled: work(None, cancelled), gone)
            if busy := gate.full():
                return busy
            return gate.events(work, gone, piece=lambda text: json.dumps({"delta": text}),
                               last=lambda result: [json.dumps({"result": public(result)})])

        route.__name__ = f"tutor_{mode}"
        app.post(f"/v1/tutor/{mode}")(route)

    text_route("answer")
    text_route("explain")

    @app.post("/v1/tutor/mark")
    async def mark(request: Request):
        body, problem = await parse(request, MarkBody)
        if problem:
            return problem
        return await run(lambda cancelled: tutor_for(body.subject, cancelled, body.rag).mark(body.question_id, body.answer,
                                                                                             student=body.student))

    @app.post("/v1/tutor/set")
    async def set_questions(request: Request):
        body, problem = await parse(request, SetBody)
        if problem:
            return problem
        return await run(lambda cancelled: tutor_for(body.subject, cancelled).set_questions(body.type, topic=body.topic,
                                                                                             count=body.count, gold=body.gold))

    @app.post("/v1/tutor/plan")
    async def plan(request: Request):
        body, problem = await parse(request, PlanBody)
        if problem:
            return problem

        def work(cancelled):
            from ..infer.plan import render

            with tempfile.TemporaryDirectory() as folder:
                results = Path(folder) / "results.jsonl"
                results.write_text("".join(json.dumps(row) + "\n" for row in body.results), encoding="utf-8")
                made, problems = tutor_for(body.subject).plan(results, days=body.days, student=body.student)
            return {"plan": made.model_dump(mode="json"), "problems": [p.replace(str(results), "results") for p in problems],
                    "table": render(made)}

        return await run(work)

    @app.post("/v1/diagrams")
    async def diagram(request: Request):
        body, problem = await parse(request, DiagramBody)
        if problem:
            return problem
        if bool(body.code) == bool(body.description):
            return error(400, "give the diagram as `code` or as a `description`, one of them", param="code")

        def work(cancelled):
            from ..diagrams import renderer_for
            from ..infer.results import DiagramResult

            tutor = tutor_for(body.subject, cancelled)
            if body.description:
                return tutor.draw(body.description, body.format)
            fmt = tutor.kit.format(body.format or "tikz")
            rendering = renderer_for(workspace).render(fmt, body.code)
            return DiagramResult(description="", format=fmt.name, ok=rendering.ok, code=body.code, rounds=1,
                                 png=str(rendering.png) if rendering.ok else None,
                                 error="" if rendering.ok else str(rendering.error))

        return await run(work)

    @app.get("/v1/diagrams/{name}")
    async def picture(name: str):
        from fastapi.responses import FileResponse

        key, _, suffix = name.partition(".")
        if not KEY.fullmatch(key) or suffix not in ("png", "svg"):
            return error(404, f"no diagram {name!r}: diagrams are /v1/diagrams/<64 hex digits>.png or .svg", param="name",
                         code="not_found")
        from ..diagrams import renderer_for

        entry = renderer_for(workspace).cache_dir / key[:2] / key
        path = entry / f"diagram.{suffix}"
        if suffix == "svg" and not path.exists() and (entry / "diagram.pdf").exists():
            renderer_for(workspace).pdf_to_svg(entry / "diagram.pdf", path)
        if not path.is_file():
            return error(404, f"no diagram {name!r} on this server", param="name", code="not_found")
        return FileResponse(path, media_type="image/png" if suffix == "png" else "image/svg+xml",
                            headers={"Cache-Control": "private, max-age=86400", "X-Content-Type-Options": "nosniff",
                                     "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'"})
