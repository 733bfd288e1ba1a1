"""Pydantic models at every boundary: what plugins register and what the workspace stores.

Half of the plugin contract lives here (the other half is hookspecs.py). Every
model forbids unknown fields, so a typo in a bank file is an error, not a
silently ignored key.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

from .markers import DiagramMarker, find_diagrams, replace_diagrams

Level = Literal["A-Level", "IGCSE"]
QuestionFormat = Literal["mcq", "structured", "essay", "data-response", "calculation", "practical"]
DiagramPolicy = Literal["none", "optional", "required"]
SLUG = r"^[a-z][a-z0-9-]*$"


class Model(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)


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


def _fill_or_check_id(data: Any, expected: str) -> Any:
    """Ids are derived from content: fill a missing one, reject a stale one."""
    if isinstance(data, dict):
        given = data.get("id")
        if not given:
            data = {**data, "id": expected}
        elif given != expected:
            raise ValueError(f"id {given!r} does not match the content; expected {expected!r}")
    return data


# --- subjects and question types ------------------------------------------------


class Subject(Model):
    """A school subject. Registered once, by exactly one plugin."""

    name: str = Field(pattern=r"^[a-z][a-z0-9_]*$", description="Used in `--subject`, entry points and `tutor_<name>`.")
    title: str = Field(description="Human name, e.g. 'Physics'.")
    syllabus: str = Field(description="The syllabuses the tutor is aimed at, e.g. 'Cambridge International A Level 9702'.")
    topics: list[str] = Field(min_length=1, description="Topic slugs every question's `topic` must come from.")
    diagram_formats: list[str] = Field(default_factory=list, description="Diagram formats this subject's diagram model writes, most used first.")
    bank: Path | None = Field(default=None, description="Directory of the bundled sample bank (questions.jsonl, answers.jsonl, diagrams.jsonl).")
    train: dict[str, Any] = Field(default_factory=dict, description="This subject's training defaults: keys of [train] in tutor.toml (e.g. epochs, lora_r).")

    @field_validator("topics")
    @classmethod
    def _topic_slugs(cls, topics: list[str]) -> list[str]:
        for topic in topics:
            if not re.match(SLUG, topic):
                raise ValueError(f"topic {topic!r} must be a lowercase slug like 'atomic-structure'")
        return topics


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
    level: Level
    format: QuestionFormat
    marks: int | None = Field(default=None, ge=1, description="Marks of every question of this type; None when it varies.")
    guide: str = Field(min_length=80, description="The full answering guide: structure, knowledge, analysis, evaluation, diagrams.")
    exemplars: list[Exemplar] = Field(min_length=1)
    diagrams: DiagramPolicy = Field(default="none", description="Whether gold answers of this type carry (DIAGRAM: ...) markers.")
    diagram_formats: list[str] = Field(default_factory=list, description="Formats its diagrams are drawn in.")
    answer_words: tuple[int, int] | None = Field(default=None, description="Expected length band (min, max) of a gold answer, in words.")

    @model_validator(mode="after")
    def _consistent(self) -> QuestionType:
        if self.diagrams != "none" and not self.diagram_formats:
            raise ValueError("a type that has diagrams must name its diagram_formats")
        if self.answer_words and self.answer_words[0] > self.answer_words[1]:
            raise ValueError("answer_words must be (min, max)")
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
    strand: str | None = Field(default=None, description="When skills are levelled separately (e.g. 'AO1/AO2' and 'AO3'), the skill this table marks.")


class MarkScheme(Model):
    """Marking points with marks, level descriptors for extended writing, or both."""

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
        parts = [(p.get("label"), normalise_text(p.get("text", "")), p.get("marks")) for p in data.get("parts") or [] if isinstance(p, dict)]
        options = {k: normalise_text(v) for k, v in (data.get("options") or {}).items() if isinstance(v, str)}
        return content_id(data.get("subject"), data.get("type"), normalise_text(data.get("stem") or ""), parts, options)

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _fill_or_check_id(data, cls.content_id(data)) if isinstance(data, dict) else data

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
            raise ValueError(f"final answers share a key {sorted({k for k in keys if keys.count(k) > 1}, key=str)}: give each a part or a label")
        self._check_mark_scheme(labels)
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
                raise ValueError(f"{_where(label)} is marked by levels, so its marking points would be marks on top: put them in notes as indicative content")
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

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        if isinstance(data, dict):
            return _fill_or_check_id(data, content_id(data.get("question_id"), normalise_text(data.get("text") or "")))
        return data

    @field_validator("text")
    @classmethod
    def _markers_well_formed(cls, text: str) -> str:
        find_diagrams(text)
        return text

    @property
    def diagrams(self) -> list[DiagramMarker]:
        return find_diagrams(self.text)

    @property
    def words(self) -> int:
        """Length in words, not counting diagram descriptions (they stand for pictures)."""
        return len(replace_diagrams(self.text, lambda marker: "").split())


def _diagram_id(data: Any) -> Any:
    """A diagram and the request it answers share one id: format + description."""
    if isinstance(data, dict):
        return _fill_or_check_id(data, content_id(data.get("format"), normalise_text(data.get("description") or "")))
    return data


class Diagram(Model):
    """A diagram description with code in a diagram format that draws it."""

    id: str = Field(default="", description="Derived from format and description.")
    description: str = Field(min_length=1)
    format: str = Field(description="A registered diagram format, e.g. 'circuitikz'.")
    code: str = Field(min_length=1, description="The body the format wraps into a document.")
    question_id: str | None = Field(default=None, description="The question whose gold answer asked for it, if any.")
    author: str

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _diagram_id(data)


class DiagramRequest(Model):
    """A diagram a gold answer asked for, waiting for code: the diagram stage's input."""

    id: str = Field(default="", description="Derived from format and description, like the Diagram it becomes.")
    description: str = Field(min_length=1)
    format: str
    question_ids: list[str] = Field(default_factory=list, description="Every question whose gold answer asked for it.")

    @model_validator(mode="before")
    @classmethod
    def _id(cls, data: Any) -> Any:
        return _diagram_id(data)


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
    example: str = Field(description="A short body in this format, shown to diagram models.")
    keywords: tuple[str, ...] = Field(default=(), description="Words in a description that call for this format, e.g. 'circuit'.")

    def suits(self, description: str) -> bool:
        return any(re.search(rf"\b{re.escape(word)}", description, re.IGNORECASE) for word in self.keywords)

    def document(self, body: str) -> str:
        return f"\\documentclass[border=4pt]{{standalone}}\n{self.preamble.strip()}\n\\begin{{document}}\n{body.strip()}\n\\end{{document}}\n"

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
        return problems


class Score(Model):
    marks: float = Field(ge=0)
    out_of: float = Field(gt=0)
    feedback: str = ""

    @property
    def fraction(self) -> float:
        return self.marks / self.out_of


class Evaluator(Model):
    """Scores an answer to a question; `formats` says which question formats it can judge."""

    name: str = Field(pattern=SLUG)
    description: str
    formats: list[QuestionFormat]
    score: Callable[[Question, str], Score]


class QuestionSource(Model):
    """Somewhere questions come from: an importer for files or a scraper for a site."""

    name: str = Field(pattern=SLUG)
    description: str
    fetch: Callable[..., Iterable[tuple[str, dict]]] = Field(
        description="fetch(location, **options) yields (where, record): where each raw record came from ('file:line' or a URL) and the record.")


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
