"""Pydantic models at every boundary: what plugins register and what the workspace stores.

Half of the plugin contract lives here (the other half is hookspecs.py). Every
model forbids unknown fields, so a typo in a bank file is an error, not a
silently ignored key, and the error suggests the field that was meant.
"""

from __future__ import annotations

import difflib
import hashlib
import json
import re
import typing
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_core import InitErrorDetails, PydanticCustomError

from .markers import DiagramMarker, find_diagrams, replace_diagrams

QuestionFormat = Literal["mcq", "structured", "essay", "data-response", "calculation", "practical"]
DiagramPolicy = Literal["none", "optional", "required"]
# How a type's questions are marked; the bank checks every question against its type's style.
Marking = Literal["points", "levels", "points-with-caps", "mixed"]
SLUG = r"^[a-z][a-z0-9-]*$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)

    @model_validator(mode="wrap")
    @classmethod
    def _did_you_mean(cls, data: Any, handler: Callable) -> Any:
        """An unknown field's error names the field that was probably meant (`stemm` -> `stem`).

        Done once, by the outermost model, for every nested location: pydantic
        keeps the errors a nested model's own validator rewrites as they were.
        """
        try:
            return handler(data)
        except ValidationError as err:
            errors = err.errors()
            if not any(e["type"] == "extra_forbidden" for e in errors):
                raise
            raise ValidationError.from_exception_data(err.title, [_with_suggestion(cls, e) for e in errors]) from None


def _with_suggestion(model: type[BaseModel], error: dict) -> InitErrorDetails:
    if error["type"] != "extra_forbidden":
        return InitErrorDetails(type=error["type"], loc=error["loc"], input=error["input"], ctx=error.get("ctx", {}))
    fields = _fields_at(model, error["loc"][:-1])
    close = difflib.get_close_matches(str(error["loc"][-1]), fields, n=1, cutoff=0.6)
    hint = f"; did you mean {close[0]!r}?" if close else (f"; valid: {', '.join(fields)}" if fields else "")
    message = PydanticCustomError("extra_forbidden", "Extra inputs are not permitted" + hint)
    return InitErrorDetails(type=message, loc=error["loc"], input=error["input"])


def _fields_at(model: type[BaseModel], loc: tuple) -> list[str]:
    """The field names of the model reached by following `loc` (field names and list indexes) from `model`."""
    current: Any = model
    for step in loc:
        if current is None or isinstance(step, int):  # a list index stays on the same model
            continue
        field_info = current.model_fields.get(step)
        current = _model_in(field_info.annotation) if field_info else None
    return list(current.model_fields) if current else []


def _model_in(annotation: Any) -> type[BaseModel] | None:
    """The model an annotation holds: X, list[X], X | None ... (None when it holds none)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    return next(filter(None, map(_model_in, typing.get_args(annotation))), None)


def _no_control_characters(text: str) -> str:
    """Refuse NULs, escapes and the like: they come from broken exports, and break prompts,
    tokenizers and terminals downstream. Tabs and line breaks are ordinary text."""
    for position, char in enumerate(text, start=1):
        if char not in "\t\n\r" and unicodedata.category(char) == "Cc":
            raise ValueError(f"contains a control character U+{ord(char):04X} at position {position}")
    return text


# A question's text: what students, teacher models and tutors read. Checked here, so an
# import and `bank validate` refuse the same characters with the same message.
Text = Annotated[str, AfterValidator(_no_control_characters)]


def normalise_text(text: str) -> str:
    """Whitespace-insensitive form of a text: used for ids and exact-duplicate checks."""
    return " ".join(text.split())


def content_id(*parts: Any) -> str:
    """A stable 16-hex id from content: same content, same id, on every machine."""
    blob = json.dumps(parts, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


def _fill_id(data: Any, expected: Callable[[dict], str]) -> Any:
    """Ids are derived from content: a missing one is filled in before validation."""
    if isinstance(data, dict) and not data.get("id"):
        data = {**data, "id": expected(data)}
    return data


def _check_id(given: str, expected: str) -> None:
    """A stale id is checked after everything else, so that the root cause (a wrong part mark, an
    unclosed marker) is what a user sees first: fixing it often makes the id right again."""
    if given != expected:
        raise ValueError(f"id {given!r} does not match the content; expected {expected!r} (`tutor bank ids --write` fixes ids and links)")


# --- subjects and question types ------------------------------------------------


class Subject(Model):
    """A school subject. Registered once, by exactly one plugin."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Used in `--subject`, entry points and `tutor_<name>`.")
    title: str = Field(description="Human name, e.g. 'Physics'.")
    syllabus: str = Field(description="The syllabuses the tutor is aimed at, e.g. 'Cambridge International A Level 9702'.")
    topics: list[str] = Field(min_length=1, description="Topic slugs every question's `topic` must come from.")
    levels: dict[str, str] = Field(default_factory=dict, description=(
        "The levels its question types are set at, each with the qualification it stands for, e.g. "
        "{'AS': 'Cambridge International AS Level Biology (9700)', 'A Level': ..., 'IGCSE': ...}. A type's `level` must be one of them."))
    diagram_formats: list[str] = Field(default_factory=list,
                                       description="Diagram formats this subject's diagram model writes, most used first.")
    bank: Path | None = Field(default=None,
                              description="Directory of the bundled sample bank (questions.jsonl, answers.jsonl, diagrams.jsonl).")
    notes: Path | None = Field(default=None, description="Directory of Markdown notes, one file per topic (syllabus definitions, "
                               "key facts), that the knowledge base indexes.")
    train: dict[str, Any] = Field(default_factory=dict,
                                  description="This subject's training defaults: keys of [train] in tutor.toml (e.g. epochs, lora_r).")
    topic_weights: dict[str, float] = Field(default_factory=dict, description=(
        "How much of the syllabus (and so of the exam) each topic carries, e.g. {'kinematics': 2.0}; a topic left out weighs 1. "
        "A study plan ranks weak topics by error rate times weight."))

    @field_validator("topics")
    @classmethod
    def _topic_slugs(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not re.match(SLUG, topic):
                raise ValueError(f"topic {topic!r} must be a lowercase slug like 'atomic-structure'")
        return topics

    @model_validator(mode="after")
    def _weighted_topics(self) -> Subject:
        unknown = sorted(set(self.topic_weights) - set(self.topics))
        if unknown:
            raise ValueError(f"topic_weights names {', '.join(unknown)}, not among the topics; valid: {', '.join(self.topics)}")
        for topic, weight in self.topic_weights.items():
            if not weight > 0:
                raise ValueError(f"topic_weights[{topic!r}] is {weight}: a weight must be above 0")
        return self

    def level_problem(self, level: str) -> str | None:
        """Why a question type cannot have `level` in this subject, or None when it can."""
        if level in self.levels:
            return None
        valid = ", ".join(self.levels) or "(none: declare the subject's levels)"
        return f"level {level!r} is not one of {self.name}'s levels; valid: {valid}"


class Exemplar(Model):
    """A question of the type with a gold answer that earns full marks: the style to imitate."""

    question: str = Field(min_length=1, description="The question as the student sees it, marks included.")
    answer: str = Field(min_length=1, description="A full-mark answer, with (DIAGRAM: ...) markers where diagrams belong.")

    @field_validator("answer")
    @classmethod
    def _markers_well_formed(cls, answer: str) -> str:
        find_diagrams(answer)
        return answer


class QuestionType(Model):
    """A kind of exam question (e.g. A-Level 25-mark essay) and how to answer it to full marks."""

    subject: str = Field(description="Name of the subject this type belongs to.")
    id: str = Field(pattern=SLUG, description="Slug unique within the subject, e.g. 'alevel-25'.")
    name: str = Field(description="Human name, e.g. 'A-Level 25-mark essay'.")
    level: str = Field(min_length=1, description="One of the subject's levels, e.g. 'A Level' or 'IGCSE'.")
    format: QuestionFormat
    marks: int | None = Field(default=None, ge=1, description="Marks of every question of this type; None when it varies.")
    marking: Marking = Field(default="points", description=(
        "How its questions are marked: 'points' (marking points), 'levels' (level descriptors), 'points-with-caps' "
        "(marking points in sections, each capped: the question's parts), or 'mixed' (each part by points or by levels)."))
    caps: list[int] = Field(default_factory=list, description=(
        "For 'points-with-caps': the most marks each section earns, in order, e.g. [7, 8]; questions must have parts with these marks."))
    guide: str = Field(min_length=80, description="The full answering guide: structure, knowledge, analysis, evaluation, diagrams.")
    exemplars: list[Exemplar] = Field(min_length=1)
    diagrams: DiagramPolicy = Field(default="none", description="Whether gold answers of this type carry (DIAGRAM: ...) markers.")
    diagram_formats: list[str] = Field(default_factory=list, description="Formats its diagrams are drawn in.")
    answer_words: tuple[int, int] | None = Field(default=None, description="Expected length band (min, max) of a gold answer, in words.")

    @field_validator("level")
    @classmethod
    def _declared_level(cls, level: str, info: ValidationInfo) -> str:
        # Read from a subject's types.toml, the subject is known: check here, so the error has a line.
        subject = (info.context or {}).get("subject")
        if isinstance(subject, Subject) and (problem := subject.level_problem(level)):
            raise ValueError(problem)
        return level

    @model_validator(mode="after")
    def _consistent(self) -> QuestionType:
        if self.diagrams != "none" and not self.diagram_formats:
            raise ValueError("a type that has diagrams must name its diagram_formats")
        if self.answer_words and self.answer_words[0] > self.answer_words[1]:
            raise ValueError("answer_words must be (min, max)")
        if self.caps and self.marking != "points-with-caps":
            raise ValueError(f"caps are for marking = 'points-with-caps', not {self.marking!r}")
        if any(cap < 1 for cap in self.caps):
            raise ValueError(f"caps must be marks of 1 or more, got {self.caps}")
        if self.caps and self.marks is not None and sum(self.caps) != self.marks:
            raise ValueError(f"caps {self.caps} add up to {sum(self.caps)}, but the type has {self.marks} marks")
        return self


# --- questions and mark schemes ---------------------------------------------------


class Part(Model):
    label: Text = Field(min_length=1, description="As printed: 'a', 'b(ii)'.")
    text: Text = Field(min_length=1)
    marks: int = Field(ge=1)


class MarkPoint(Model):
    text: Text = Field(min_length=1, description="What the answer must contain to earn the mark(s).")
    marks: int = Field(default=1, ge=1)
    part: str | None = Field(default=None, description="Label of the part it belongs to; required when the question has parts.")


class LevelDescriptor(Model):
    level: int = Field(ge=1)
    marks: tuple[int, int] = Field(description="(lowest, highest) mark of the level.")
    descriptor: Text = Field(min_length=1)
    part: str | None = None
    strand: str | None = Field(default=None,
                               description="When skills are levelled separately (e.g. 'AO1/AO2' and 'AO3'), the skill this table marks.")


class MarkScheme(Model):
    """Marking points with marks, or level descriptors for extended writing.

    A question with parts may mix them, part by part (a data response whose last
    part is an essay), but one part is marked by points or by levels, never both.
    """

    points: list[MarkPoint] = Field(default_factory=list)
    levels: list[LevelDescriptor] = Field(default_factory=list)
    notes: Text = Field(default="", description="Examiner guidance: alternatives accepted, common errors, max rules.")

    @model_validator(mode="after")
    def _not_empty(self) -> MarkScheme:
        if not self.points and not self.levels:
            raise ValueError("a mark scheme needs marking points or level descriptors")
        for level in self.levels:
            if level.marks[0] > level.marks[1]:
                raise ValueError(f"level {level.level}: marks must be (lowest, highest)")
        return self


class FinalAnswer(Model):
    """A machine-checkable numeric result of a calculation."""

    part: str | None = None
    label: Text | None = Field(default=None, description="Which result, when a part has several, e.g. 'p(H2)'.")
    value: float
    unit: Text = Field(description="SI-style unit as written in the answer, '' if dimensionless.")
    sig_figs: int | None = Field(default=None, ge=1)

    @property
    def key(self) -> str | None:
        """'b', 'b:p(H2)', or None for the only result of a one-part question."""
        return ":".join(filter(None, [self.part, self.label])) or None


class Source(Model):
    name: str = Field(description="Where it came from: a bank name, a file, a site.")
    url: str | None = None
    line: int | None = Field(default=None, description="The line of the file it was imported from.")
    collected_at: datetime | None = None


class Question(Model):
    """One exam question with everything needed to mark it."""

    id: str = Field(default="", description="Derived from subject, type, stem, parts and options; filled in when omitted.")
    subject: str
    type: str = Field(description="A question-type id of the subject.")
    topic: str
    stem: Text = Field(min_length=1, description="The question text (data, context, command) before any parts.")
    parts: list[Part] = Field(default_factory=list)
    options: dict[str, Text] = Field(default_factory=dict, description="MCQ options keyed by letter.")
    key: str | None = Field(default=None, description="The correct MCQ option.")
    marks: int = Field(ge=1)
    mark_scheme: MarkScheme
    final_answers: list[FinalAnswer] = Field(default_factory=list)
    images: list[Text] = Field(default_factory=list, description="Paths, relative to the bank, of images the question refers to.")
    source: Source

    @staticmethod
    def content_id(data: dict) -> str:
        """The id of a question record (a dict, as in the file): its subject, type, stem, parts and options."""
        parts = [(p.get("label"), normalise_text(p.get("text") or ""), p.get("marks"))
                 for p in data.get("parts") or [] if isinstance(p, dict)]
        options = {k: normalise_text(v) for k, v in (data.get("options") or {}).items() if isinstance(v, str)}
        return content_id(data.get("subject"), data.get("type"), normalise_text(data.get("stem") or ""), parts, options)

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _fill_id(data, cls.content_id)

    @model_validator(mode="after")
    def _consistent(self) -> Question:
        labels = [p.label for p in self.parts]
        if len(set(labels)) != len(labels):
            raise ValueError(f"part labels repeat: {labels}")
        if self.parts and sum(p.marks for p in self.parts) != self.marks:
            raise ValueError(f"part marks add up to {sum(p.marks for p in self.parts)}, but the question has {self.marks} marks")
        if self.options or self.key:
            if not self.options or self.key is None:
                raise ValueError("an MCQ needs both options and key")
            bad = [k for k in self.options if not re.fullmatch(r"[A-Z]", k)]
            if bad:
                raise ValueError(f"option labels must be single capital letters, got {bad}")
            if self.key not in self.options:
                raise ValueError(f"key {self.key!r} is not one of the options {sorted(self.options)}")
        keys = [f.key for f in self.final_answers]
        if len(set(keys)) != len(keys):
            shared = sorted({k for k in keys if keys.count(k) > 1}, key=str)
            raise ValueError(f"final answers share a key {shared}: give each a part or a label")
        self._check_mark_scheme(labels)
        _check_id(self.id, self.content_id(self.model_dump(include={"subject", "type", "stem", "parts", "options"})))
        return self

    def _check_mark_scheme(self, labels: list[str]) -> None:
        scheme = self.mark_scheme
        for item in [*scheme.points, *scheme.levels]:
            if self.parts and item.part is None:
                raise ValueError("every marking point and level must name its part when the question has parts")
            if item.part is not None and item.part not in labels:
                raise ValueError(f"mark scheme refers to part {item.part!r}; parts are {labels}")
        # Each part (or the whole question) must be markable to its full marks.
        for label, marks in [(p.label, p.marks) for p in self.parts] or [(None, self.marks)]:
            levels = [lv for lv in scheme.levels if lv.part == label]
            if levels and any(p.part == label for p in scheme.points):
                raise ValueError(f"{_where(label)} is marked by levels, so its marking points would be marks on top: "
                                 "put them in notes as indicative content")
            if levels:
                # Separate strands (tables) add up: e.g. 8 for analysis + 4 for evaluation.
                strands = {lv.strand for lv in levels}
                top = sum(max(lv.marks[1] for lv in levels if lv.strand == strand) for strand in strands)
                if top != marks:
                    raise ValueError(f"{_where(label)}: the top level gives {top} marks, not {marks}")
            elif (available := sum(p.marks for p in scheme.points if p.part == label)) < marks:
                raise ValueError(f"{_where(label)}: marking points offer {available} marks, fewer than {marks}")

    @property
    def is_mcq(self) -> bool:
        return bool(self.options)


def _where(part: str | None) -> str:
    return f"part {part}" if part else "question"


class GoldAnswer(Model):
    """A full-mark answer to a question, by a person or a teacher model."""

    id: str = Field(default="", description="Derived from question_id and text.")
    question_id: str
    text: str = Field(min_length=1, description="The answer, with (DIAGRAM: ...) markers where diagrams belong.")
    author: str = Field(description="'sample bank', 'human:<name>' or 'teacher:<model>'.")
    reasoning: str | None = Field(default=None, description="The teacher's reasoning, kept apart from the answer.")

    @staticmethod
    def content_id(data: dict) -> str:
        return content_id(data.get("question_id"), normalise_text(data.get("text") or ""))

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _fill_id(data, cls.content_id)

    @field_validator("text")
    @classmethod
    def _markers_well_formed(cls, text: str) -> str:
        find_diagrams(text)
        return text

    @model_validator(mode="after")
    def _id_matches(self) -> GoldAnswer:
        _check_id(self.id, self.content_id({"question_id": self.question_id, "text": self.text}))
        return self

    @property
    def diagrams(self) -> list[DiagramMarker]:
        return find_diagrams(self.text)

    @property
    def words(self) -> int:
        """Length in words, not counting diagram descriptions (they stand for pictures)."""
        return len(replace_diagrams(self.text, lambda marker: "").split())


def diagram_id(data: dict) -> str:
    """A diagram and the request it answers share one id: format + description."""
    return content_id(data.get("format"), normalise_text(data.get("description") or ""))


class _DiagramId(Model):
    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _fill_id(data, diagram_id)

    @model_validator(mode="after")
    def _id_matches(self) -> Any:
        _check_id(self.id, diagram_id({"format": self.format, "description": self.description}))
        return self


class Diagram(_DiagramId):
    """A diagram description with code in a diagram format that draws it."""

    id: str = Field(default="", description="Derived from format and description.")
    description: str = Field(min_length=1)
    format: str = Field(description="A registered diagram format, e.g. 'circuitikz'.")
    code: str = Field(min_length=1, description="The body the format wraps into a document.")
    question_id: str | None = Field(default=None, description="The question whose gold answer asked for it, if any.")
    author: str


class DiagramRequest(_DiagramId):
    """A diagram a gold answer asked for, waiting for code: the diagram stage's input."""

    id: str = Field(default="", description="Derived from format and description, like the Diagram it becomes.")
    description: str = Field(min_length=1)
    format: str
    question_ids: list[str] = Field(default_factory=list, description="Every question whose gold answer asked for it.")


# --- the behaviour plugins register ---------------------------------------------------


class DiagramFormat(Model):
    """A way of drawing: a LaTeX preamble plus the body a diagram model writes.

    Subclass to change how code is pulled out of a model's reply or checked.
    """

    model_config = ConfigDict(extra="forbid", frozen=True, defer_build=True)

    name: str = Field(pattern=SLUG)
    title: str
    preamble: str = Field(description="Lines between \\documentclass and \\begin{document}.")
    environment: str | None = Field(default=None, description="The environment a body must contain, e.g. 'tikzpicture'.")
    commands: tuple[str, ...] = Field(default=(), description="Commands a body must use at least one of, for formats drawn by commands "
                                                              "rather than one environment, e.g. ('chemfig', 'schemestart', 'ce').")
    example: str = Field(description="A short body in this format, shown to diagram models.")
    keywords: tuple[str, ...] = Field(default=(), description="Words in a description that call for this format, e.g. 'circuit'.")

    def suits(self, description: str) -> bool:
        return any(re.search(rf"\b{re.escape(word)}", description, re.IGNORECASE) for word in self.keywords)

    def document(self, body: str) -> str:
        return (f"\\documentclass[border=4pt]{{standalone}}\n{self.preamble.strip()}\n"
                f"\\begin{{document}}\n{body.strip()}\n\\end{{document}}\n")

    def extract(self, reply: str) -> str:
        """The body in a model's reply, however it was wrapped.

        Takes the fenced block that holds the environment (else the first
        fenced block, else the reply); cuts a whole document down to what lies
        between \\begin{document} and \\end{document}; and without fences, drops
        prose before the first \\begin{environment} and after the last \\end{...}.
        """
        blocks = re.findall(r"```[\w-]*[ \t]*\n(.*?)```", reply, re.DOTALL)
        marker = f"\\begin{{{self.environment}}}" if self.environment else None
        code = next((b for b in blocks if marker and marker in b), blocks[0] if blocks else reply)
        if document := re.search(r"\\begin\{document\}(.*?)\\end\{document\}", code, re.DOTALL):
            code = document.group(1)
        elif not blocks and marker and marker in code:
            end = f"\\end{{{self.environment}}}"
            code = code[code.index(marker): code.rindex(end) + len(end)] if end in code else code[code.index(marker):]
        return code.strip()

    def check(self, body: str) -> list[str]:
        """Cheap static problems, found before anything is compiled."""
        problems = []
        if "\\documentclass" in body or "\\begin{document}" in body:
            problems.append("a body must not contain \\documentclass or \\begin{document}")
        if self.environment and f"\\begin{{{self.environment}}}" not in body:
            problems.append(f"expected a {self.environment} environment")
        if self.commands and not re.search(rf"\\({'|'.join(map(re.escape, self.commands))})\b", body):
            problems.append("expected one of " + ", ".join(f"\\{command}" for command in self.commands))
        return problems


class PointMark(Model):
    """One marking point as an evaluator judged it: awarded or not, and the words of the answer that earned it."""

    text: str = Field(description="The marking point (or level descriptor) as the mark scheme writes it.")
    part: str | None = None
    marks: float = Field(ge=0, description="What the point is worth.")
    awarded: bool
    evidence: str = Field(default="", description="The answer's own words that earn the point, quoted; '' when not awarded.")
    span: tuple[int, int] | None = Field(default=None, description="Start and end offsets of `evidence` in the answer.")
    why: str = Field(default="", description="A short reason, e.g. 'negated', 'number without its unit'.")


class Score(Model):
    marks: float = Field(ge=0)
    out_of: float = Field(gt=0)
    feedback: str = ""
    points: list[PointMark] = Field(default_factory=list, description="Per marking point, for evaluators that mark by points.")

    @property
    def fraction(self) -> float:
        return self.marks / self.out_of


class Evaluator(Model):
    """Scores an answer to a question; `formats` says which question formats it can judge, `subjects` whose."""

    name: str = Field(pattern=SLUG)
    description: str
    formats: list[QuestionFormat]
    score: Callable[[Question, str], Score]
    subjects: list[str] = Field(default_factory=list, description=(
        "The subjects it judges; empty for every subject. A subject's own checker (named places in geography, state "
        "symbols in chemistry) names its subject, so it never marks another subject's answers."))


class QuestionSource(Model):
    """Somewhere questions come from: an importer for files or a scraper for a site."""

    name: str = Field(pattern=SLUG)
    description: str
    fetch: Callable[..., Iterable[tuple[str, dict]]] = Field(
        description="fetch(location, **options) yields (where, record): "
                    "where each raw record came from ('file:line' or a URL) and the record.")


@dataclass(frozen=True)
class RewardBatch:
    """What a reward scores: GRPO completions, with their prompts and the subject's context.

    Item i of every list belongs to completion i. Completions of one prompt share
    a `group` number (GRPO samples several per prompt), so a reward can compare
    them with each other. The fields beyond the lists are the same for the batch.
    """

    task: Literal["answer", "set", "diagram"]
    completions: list[str]
    prompts: list[str]  # the user turn each completion answers
    questions: list[Question | None]  # the bank question behind the prompt (None for a diagram with no question)
    formats: list[str]  # the diagram format asked for ('' outside the diagram task)
    groups: list[int]
    subject: Subject
    bank: list[Question] = field(default_factory=list)  # the bank trained on: what a new question must differ from
    compile: Callable[[str, str], str | None] | None = None  # (format, code) -> None if it compiles, else its error

    def __len__(self) -> int:
        return len(self.completions)


class Reward(Model):
    """A GRPO reward: scores a batch of completions, each in [0, 1] (see RewardBatch)."""

    name: str = Field(pattern=SLUG)
    description: str
    task: Literal["answer", "set", "diagram"]
    weight: float = Field(default=1.0, gt=0)
    subjects: list[str] = Field(default_factory=list, description="The subjects it judges; empty for every subject.")
    score: Callable[[RewardBatch], list[float]]
