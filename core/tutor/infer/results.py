"""What each Tutor mode returns: pydantic results, the same for the CLI, the server and the web page."""

from __future__ import annotations

from pydantic import Field

from ..models import GoldAnswer, Model, PointMark, Question


class DiagramResult(Model):
    """One (DIAGRAM: ...) marker of a reply, drawn: its pictures, or why there are none (the marker then stays as text)."""

    description: str
    format: str | None = None
    ok: bool
    png: str | None = None
    svg: str | None = None
    code: str = ""
    rounds: int = Field(default=0, description="Attempts at the code: 1, or 2 after a repair round.")
    error: str = ""


class TextResult(Model):
    """A reply in words: `answer` and `explain`."""

    mode: str
    subject: str
    question_id: str | None = None
    question: str = Field(description="The question as the model was given it.")
    text: str
    cut: bool = Field(description="Stopped by the token limit, not by the model's end of turn.")
    model: str = Field(description="What wrote it: 'base', an adapter folder, or 'teacher:<model>'.")
    diagrams: list[DiagramResult] = Field(default_factory=list)
    sources: list[str] = Field(default_factory=list, description="The knowledge-base chunks put into the prompt (--rag), by source.")


class LevelAward(Model):
    """A part marked by levels, as the rule marker estimates it from the indicative content the answer covers."""

    part: str | None = None
    strand: str | None = None
    level: int = Field(ge=0, description="0: no creditable content.")
    marks: float = Field(ge=0)
    out_of: int
    descriptor: str = ""
    covered: list[str] = Field(default_factory=list, description="The indicative content found in the answer.")
    share: float = Field(description="The share of the indicative content covered.")


class MarkResult(Model):
    """A student's answer marked point by point against the mark scheme."""

    subject: str
    question_id: str
    student: str | None = None
    marks: float = Field(ge=0, description="Marks awarded: points, the MCQ key, and the estimated levels.")
    out_of: float = Field(gt=0, description="The marks those parts carry.")
    question_marks: int = Field(description="The question's whole marks, levelled parts included.")
    points: list[PointMark] = Field(default_factory=list)
    levelled: list[str] = Field(default_factory=list, description="Parts marked by levels that could not be estimated (no indicative "
                                                                 "content in the mark scheme's notes): left to an examiner.")
    levels: list[LevelAward] = Field(default_factory=list, description="The level estimated for each part (and strand) marked by levels.")
    feedback: list[str] = Field(default_factory=list, description="Two or three lines in the mark scheme's terms.")
    checks: list[str] = Field(default_factory=list, description="What the subject's own evaluators said (units, final answers...).")
    marker: str = Field(description="'rules' (deterministic) or 'judge:<model>'.")
    truncated: bool = Field(default=False, description="The answer was cut to the length a marker reads.")
    sources: list[str] = Field(default_factory=list, description="Knowledge-base chunks shown to the judge (--rag), by source.")


class SetQuestion(Model):
    """A question the tutor set, accepted: it passed the bank's checks and is new."""

    question: Question
    gold: GoldAnswer | None = None
    novelty: float = Field(description="1 - the highest TF-IDF cosine to a bank question or an earlier one of the batch.")
    nearest: str | None = Field(default=None, description="Id of the most similar question it was compared with.")
    checks: list[str] = Field(default_factory=list, description="Checks it passed, e.g. 'final answers agree with the gold answer'.")
    model: str


class SetReject(Model):
    """A reply that did not become a question, and why."""

    text: str
    reasons: list[str]
    model: str


class SetResult(Model):
    subject: str
    type: str
    topic: str | None = None
    accepted: list[SetQuestion] = Field(default_factory=list)
    rejected: list[SetReject] = Field(default_factory=list)
