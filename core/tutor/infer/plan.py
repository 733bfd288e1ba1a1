"""Study plans (`tutor --subject S plan --results FILE`): from a student's marks to what to practise, in what order, on which day.

A results file (question ids with the marks awarded, or the rows `mark --answers`
writes) becomes:
  - mastery per topic and per question type: the share of marks the student
    can be expected to earn on the next question there, with a 90% interval,
    because three questions say little and the plan must show how little;
  - the topics ranked by weakness, how far the topic is from learnt times
    the topic's syllabus weight (Subject.topic_weights): a weak topic that
    carries a third of the exam comes before an equally weak one that carries
    a tenth. "How far" is 1 - P(known) where knowledge tracing has it, else
    1 - mastery: tracing's mastery never passes 1 - slip (marks still slip
    once a topic is learnt), so 1 - mastery would keep a learnt, heavily
    weighted topic near the top;
  - per topic the reason (the marking points missed, quoted), practice
    questions from the bank the student has not done (easier while mastery
    is low, harder as it rises), and reviews of the questions missed;
  - a day-by-day schedule over --days; plan.md, plan.json and mastery.png.

Mastery. A topic with one attempt gets a Beta posterior on the share of
marks, its prior centred on the student's overall share and worth
PRIOR_STRENGTH tries (a topic seen once reads close to how the student does
everywhere, not 0% or 100%). From TRACE_FROM attempts on, Bayesian Knowledge
Tracing (Corbett & Anderson 1995): a hidden known/unknown state per topic that
the student may learn at each attempt, seen through guesses and slips, so
recent attempts count more than old ones, which a student who is learning
needs. Its prior P(known) is the student's own, implied by their overall share
(an individualised prior: ability carries across topics). Its parameters are
fitted by EM over the file's sequences: per topic when a class's results hold
CLASS students' attempts at it, else one fit pooled over topics; the fits are
pulled towards conventional values (DEFAULT) by PSEUDO pseudo-observations, so
one student's 40 attempts move them a little and a class's thousands decide
them. The interval is always the Beta's: tracing moves the centre, the number
of marks seen sets the width.

Why tracing from the second attempt and not later: bench/plan.py simulates
students in two worlds (BKT's own, and a continuous mastery per topic with
questions of varied difficulty) and sweeps the threshold. Later is worse:
from 4 attempts the log-loss is 0.002 to 0.020 worse in all four cases (two
worlds, a class's fit or one student's). 1 and 2 are within 0.004 of each
other; 2 keeps a single answer from swinging a topic through tracing's sharp
update on one guess or slip, and shows the Beta's plainer reading instead.

Why this module's own BKT, not pyBKT (the maintained library, MIT): pyBKT
1.4.3 is pure Python (no C++ extension any more) but pulls pandas,
scikit-learn, scipy and requests (~290 MB), fails at import with
scikit-learn >= 1.8 (it probes sklearn's metrics and only catches TypeError)
and in its EM with numpy 2 ("setting an array element with a sequence"); it
would pin this project to numpy < 2 and scikit-learn < 1.8, next to torch. Where it ran
(numpy 1.26, scikit-learn 1.5) it took 22 s to fit 6,000 binary attempts on
two cores; it takes only 0/1 outcomes, and a question's marks are a share.
The forward-backward EM below is ~60 lines of numpy and takes that share as
soft evidence.

Reviews are scheduled by FSRS (the `fsrs` package, py-fsrs, MIT; pure Python,
no dependencies beyond typing-extensions): each question whose latest attempt
missed marks is a card, each attempt a review rated from its share of marks,
and its next reviews (assuming each goes well) fall where FSRS puts them
within --days.

numpy, fsrs and matplotlib are imported inside the functions that use them:
`tutor --help` must stay light.
"""

from __future__ import annotations

import csv
import difflib
import math
import os
from collections.abc import Iterable, Iterator
from datetime import date, datetime, timedelta, timezone
from pathlib import Path
from typing import Any, Literal

from pydantic import ConfigDict, Field, ValidationError

from ..errors import Problem, TutorError, UnknownName
from ..jsonl import import_dicts, write_atomic
from ..models import Model, PointMark, Question

TRACE_FROM = 2  # attempts in a topic from which knowledge tracing replaces the Beta posterior (the module's docstring says why)
TRIES_CAP = 4  # a question weighs as many tries as its marks, up to 4: marking points of one answer share one understanding
PRIOR_STRENGTH = 4.0  # the Beta prior counts as 4 tries at the student's overall share (bench/plan.py: 1, 2 and 8 predict worse)
INTERVAL = 0.90
CLASS = 10  # sequences (students) of a topic from which it gets its own tracing fit
PSEUDO = 5.0  # pseudo-observations pulling a tracing fit towards DEFAULT
MAX_GUESS = MAX_SLIP = 0.3  # the usual bounds: beyond them "known" stops meaning known (guessing would beat knowing)
REVIEWS_PER_DAY = 5  # so a backlog of missed questions spreads over the first days instead of landing on day 1
QUOTED = 3  # missed marking points quoted in a topic's reason
QUOTE_CHARS, STEM_CHARS = 90, 80
# Easier to harder, for choosing practice: a format's demand first, then marks.
FORMAT_RANK = {"mcq": 0, "calculation": 1, "structured": 1, "data-response": 2, "practical": 2, "essay": 3}
PLAN_MD, PLAN_JSON, MASTERY_PNG = "plan.md", "plan.json", "mastery.png"


# --- the records ---------------------------------------------------------------------------------


class Attempt(Model):
    """One question a student answered, with the marks it earned; `order` is its place in time."""

    question_id: str
    topic: str
    type: str
    marks: float = Field(ge=0)
    out_of: float = Field(gt=0)
    order: int = Field(description="Time order over the whole results file: 0 is the first attempt.")
    student: str | None = None
    missed: list[str] = Field(default_factory=list, description="Marking points not awarded, where the results say (or marks were 0).")
    at: datetime | None = Field(default=None, description="When it was answered, if the results say.")

    @property
    def fraction(self) -> float:
        return min(1.0, self.marks / self.out_of)

    @property
    def tries(self) -> float:
        """How much evidence the attempt is: its marks, capped (TRIES_CAP says why)."""
        return min(self.out_of, TRIES_CAP)


class Tracing(Model):
    """Bayesian Knowledge Tracing's four parameters for one topic (or type)."""

    prior: float = Field(description="P(known) before the first attempt.")
    learn: float = Field(description="P(unknown -> known) at each attempt.")
    guess: float = Field(description="P(a mark) while unknown.")
    slip: float = Field(description="P(no mark) while known.")


DEFAULT = Tracing(prior=0.4, learn=0.1, guess=0.2, slip=0.1)  # the conventional starting values of BKT fits


class Mastery(Model):
    """What the results say about one topic or type."""

    name: str
    mastery: float = Field(description="Expected share of marks on the next question here.")
    low: float
    high: float
    method: Literal["prior", "beta", "tracing"] = Field(description=(
        "prior: no attempts, the student's overall share; beta: Beta posterior; tracing: Bayesian Knowledge Tracing."))
    known: float | None = Field(default=None, description="P(known), knowledge tracing only.")
    attempts: int = 0
    marks: float = 0.0
    out_of: float = 0.0


class Practice(Model):
    question_id: str
    type: str
    marks: int
    stem: str


class Review(Model):
    """A question whose latest attempt missed marks, and the days FSRS reviews it on within the plan."""

    question_id: str
    rating: Literal["Again", "Hard", "Good", "Easy"]
    days: list[int]
    next_after: int | None = Field(default=None, description="The first review after the plan, when none falls inside it.")
    missed: list[str] = Field(default_factory=list)


class TopicPlan(Model):
    rank: int
    topic: str
    weight: float
    weakness: float
    estimate: Mastery
    reason: str
    practice: list[Practice]
    reviews: list[Review]


class Task(Model):
    kind: Literal["practice", "review", "recap"]
    topic: str
    question_id: str | None = None
    note: str = ""


class Day(Model):
    day: int
    on: date | None = Field(default=None, description="The day's date, when the results are dated.")
    tasks: list[Task]


class StudyPlan(Model):
    subject: str
    student: str | None
    days: int
    start: date | None = Field(default=None, description="The day of the last result, when the results are dated; day 1 follows it.")
    attempts: int
    overall: Mastery
    topics: list[TopicPlan]
    types: list[Mastery]
    schedule: list[Day]
    tracing: dict[str, Tracing] = Field(description=(
        "The knowledge-tracing parameters fitted, per topic attempted; each estimate starts from the student's own prior, not `prior`."))


# --- reading results -----------------------------------------------------------------------------------


class _Row(Model):
    """A results row: plain (question_id, marks) or a MarkResult (tutor.infer.results) from `mark --answers`.

    A MarkResult's marks and out_of cover the parts marked by points (parts
    marked by levels are left to an examiner), so out_of may be below the
    question's marks: the attempt is then out of out_of. Keys this module does
    not use (feedback, marker, level, checks...) are ignored, so rows from a
    newer `mark` still read.
    """

    model_config = ConfigDict(extra="ignore", defer_build=True)

    question_id: str = Field(min_length=1)
    marks: float = Field(ge=0)
    out_of: float | None = Field(default=None, gt=0)
    student: str | None = None
    at: datetime | None = None
    order: int | None = None
    points: list[PointMark] = Field(default_factory=list)
    subject: str | None = None
    question_marks: int | None = None


def read_results(path: Path, bank) -> tuple[list[Attempt], list[str]]:
    """The attempts in a results file (JSON Lines, or CSV `question_id,marks[,out_of]`), and one line per row left out.

    A bad row (unknown id, marks above the question's, malformed) is reported
    as `file:line: reason` and skipped; the rest are used. Time order: `at`
    (or `order`) when every row has one, else the file's order.
    """
    path = Path(path)
    if not path.is_file():
        raise TutorError(f"{path}: no such file")
    rows = _csv_rows(path) if path.suffix.lower() == ".csv" else import_dicts(path)
    by_id = {q.id: q for q in bank.questions}
    problems: list[str] = []
    kept: list[tuple[int, _Row, Question]] = []
    for line, data, why in rows:
        if data is None:
            problems.append(str(Problem(str(path), line, None, why)))
            continue
        try:
            row = _Row.model_validate(data)
        except ValidationError as err:
            problems += [str(Problem(str(path), line, ".".join(map(str, e["loc"])) or None, e["msg"])) for e in err.errors()]
            continue
        question, why = _question(row, by_id)
        why = why or _marks_problem(row, question)
        if why:
            problems.append(str(Problem(str(path), line, None, why)))
        else:
            kept.append((line, row, question))
    if not kept and not problems:
        problems.append(f"{path}: the file has no results")
    return [_attempt(order, row, question) for order, (_, row, question) in enumerate(_in_time_order(kept))], problems


def _csv_rows(path: Path) -> Iterator[tuple[int, dict | None, str]]:
    """(line, row as a dict, why not): columns by the header when the first cell is `question_id`, else question_id, marks, out_of."""
    columns = ["question_id", "marks", "out_of"]
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.reader(handle)
            for cells in reader:
                line = reader.line_num
                if not any(cell.strip() for cell in cells):
                    continue
                if line == 1 and cells[0].strip() == "question_id":
                    columns = [cell.strip() for cell in cells]
                    continue
                if len(cells) > len(columns):
                    yield line, None, f"{len(cells)} columns; expected {', '.join(columns)}"
                    continue
                yield line, {name: cell.strip() for name, cell in zip(columns, cells) if cell.strip()}, ""
    except UnicodeDecodeError as err:
        raise TutorError(f"{path}: not valid UTF-8 ({err.reason} at byte {err.start}); save the file as UTF-8") from None


def _question(row: _Row, by_id: dict[str, Question]) -> tuple[Question | None, str]:
    """The bank's question for a row: its exact id or a unique prefix of one; else why not, with the closest ids."""
    if row.question_id in by_id:
        return by_id[row.question_id], ""
    prefixed = [qid for qid in by_id if qid.startswith(row.question_id)]
    if len(prefixed) == 1:
        return by_id[prefixed[0]], ""
    close = prefixed[:3] or difflib.get_close_matches(row.question_id, list(by_id), n=3, cutoff=0.5)
    hint = f"closest: {', '.join(close)}" if close else f"none is close; the bank has {len(by_id)} questions"
    kind = "ambiguous question id prefix" if prefixed else "unknown question id"
    return None, f"{kind} {row.question_id!r} ({hint})"


def _marks_problem(row: _Row, question: Question) -> str:
    """Why a row's marks cannot be right for the bank's question (a different subject or bank version, a typo); '' when they can."""
    if row.subject is not None and row.subject != question.subject:
        return f"the row is for subject {row.subject!r}, but question {question.id} is {question.subject}"
    if row.question_marks is not None and row.question_marks != question.marks:
        return f"the row gives question {question.id} {row.question_marks} marks, the bank {question.marks}: another version of the bank?"
    if row.marks > question.marks:
        return f"{row.marks:g} marks is above the question's {question.marks}"
    if row.out_of is not None and row.out_of > question.marks:
        return f"out_of {row.out_of:g} is above the question's {question.marks} marks"
    if row.out_of is not None and row.marks > row.out_of:
        return f"{row.marks:g} marks is above its out_of {row.out_of:g}"
    return ""


def _in_time_order(kept: list[tuple[int, _Row, Question]]) -> list[tuple[int, _Row, Question]]:
    if kept and all(row.at for _, row, _ in kept):
        return sorted(kept, key=lambda item: (_utc(item[1].at), item[0]))
    if kept and all(row.order is not None for _, row, _ in kept):
        return sorted(kept, key=lambda item: (item[1].order, item[0]))
    return kept


def _attempt(order: int, row: _Row, question: Question) -> Attempt:
    missed = [p.text for p in row.points if not p.awarded]
    if not row.points and row.marks == 0:  # nothing earned: every marking point was missed
        missed = [p.text for p in question.mark_scheme.points]
    return Attempt(question_id=question.id, topic=question.topic, type=question.type, marks=row.marks, out_of=row.out_of or question.marks,
                   order=order, student=row.student, missed=missed, at=_utc(row.at) if row.at else None)


def _utc(moment: datetime) -> datetime:
    """A time as FSRS wants it: aware, in UTC (a naive time is taken as UTC)."""
    return moment.replace(tzinfo=timezone.utc) if moment.tzinfo is None else moment.astimezone(timezone.utc)


# --- knowledge tracing ----------------------------------------------------------------------------------

Sequence = list[tuple[float, float]]  # one student's attempts at one topic, in order: (share of marks, tries)


def fit_tracing(sequences: list[Sequence], start: Tracing = DEFAULT, iterations: int = 100, tol: float = 1e-4) -> Tracing:
    """BKT's parameters by EM (Baum-Welch) over the sequences, pulled towards DEFAULT by PSEUDO pseudo-observations.

    A share of marks f on a question worth w tries is soft evidence: its
    likelihood is ((1 - slip)^f slip^(1 - f))^w when known, (guess^f (1 - guess)^(1 - f))^w
    when not; for one-mark questions that is BKT's usual right/wrong.
    """
    import numpy as np

    sequences = [s for s in sequences if s]
    if not sequences:
        return start
    length = max(map(len, sequences))
    f, w, mask = (np.zeros((len(sequences), length)) for _ in range(3))
    for i, seq in enumerate(sequences):
        f[i, :len(seq)], w[i, :len(seq)], mask[i, :len(seq)] = [x for x, _ in seq], [t for _, t in seq], 1
    p = start
    for _ in range(iterations):
        gamma, xi = _posteriors(p, f, w)
        known, unknown, moved = gamma[..., 1] * mask, gamma[..., 0] * mask, xi * mask[:, 1:]
        new = Tracing(
            prior=(known[:, 0].sum() + PSEUDO * DEFAULT.prior) / (len(sequences) + PSEUDO),
            learn=(moved.sum() + PSEUDO * DEFAULT.learn) / ((unknown[:, :-1] * mask[:, 1:]).sum() + PSEUDO),
            guess=min(MAX_GUESS, ((unknown * w * f).sum() + PSEUDO * DEFAULT.guess) / ((unknown * w).sum() + PSEUDO)),
            slip=min(MAX_SLIP, ((known * w * (1 - f)).sum() + PSEUDO * DEFAULT.slip) / ((known * w).sum() + PSEUDO)),
        )
        done = max(abs(getattr(new, k) - getattr(p, k)) for k in Tracing.model_fields) < tol
        p = new
        if done:
            break
    return p


def _posteriors(p: Tracing, f, w):
    """Forward-backward, scaled: P(state at t | whole sequence), and P(unknown at t, known at t+1 | sequence).

    Padding after a sequence's end has w = 0 (likelihood 1), so it changes
    nothing before it; the M-step masks it out.
    """
    import numpy as np

    emit = np.stack([(p.guess ** f * (1 - p.guess) ** (1 - f)) ** w, ((1 - p.slip) ** f * p.slip ** (1 - f)) ** w], axis=-1)
    move = np.array([[1 - p.learn, p.learn], [0.0, 1.0]])
    n, length = f.shape
    alpha, beta, scale = np.zeros((n, length, 2)), np.ones((n, length, 2)), np.zeros((n, length))
    state = np.tile([1 - p.prior, p.prior], (n, 1))
    for t in range(length):
        state = (state if t == 0 else alpha[:, t - 1] @ move) * emit[:, t]
        scale[:, t] = state.sum(axis=1)
        alpha[:, t] = state / scale[:, t, None]
    for t in range(length - 2, -1, -1):
        beta[:, t] = (emit[:, t + 1] * beta[:, t + 1]) @ move.T / scale[:, t + 1, None]
    gamma = alpha * beta
    gamma /= gamma.sum(axis=-1, keepdims=True)
    xi = alpha[:, :-1, 0] * p.learn * emit[:, 1:, 1] * beta[:, 1:, 1] / scale[:, 1:]
    return gamma, xi


def known_after(p: Tracing, sequence: Sequence) -> float:
    """P(known) at the next attempt: the forward pass over the sequence, then the chance to learn from the last attempt."""
    known = p.prior
    for share, tries in sequence:
        if_known = ((1 - p.slip) ** share * p.slip ** (1 - share)) ** tries
        if_unknown = (p.guess ** share * (1 - p.guess) ** (1 - share)) ** tries
        known = known * if_known / (known * if_known + (1 - known) * if_unknown)
        known += (1 - known) * p.learn
    return known


def expected_share(p: Tracing, known: float, ahead: int = 0) -> float:
    """The share of marks expected `ahead` attempts after the next one, learning as BKT does meanwhile."""
    known = 1 - (1 - known) * (1 - p.learn) ** ahead
    return known * (1 - p.slip) + (1 - known) * p.guess


def fit_params(attempts: list[Attempt], key: str = "topic") -> dict[str, Tracing]:
    """Tracing parameters per group (topic or type): its own fit with CLASS sequences of it, else one fit pooled over groups."""
    sequences: dict[str, dict[str | None, Sequence]] = {}
    for a in sorted(attempts, key=lambda a: a.order):
        sequences.setdefault(getattr(a, key), {}).setdefault(a.student, []).append((a.fraction, a.tries))
    pooled = fit_tracing([s for per_student in sequences.values() for s in per_student.values()])
    return {group: fit_tracing(list(per_student.values()), pooled) if len(per_student) >= CLASS else pooled
            for group, per_student in sequences.items()}


# --- mastery ---------------------------------------------------------------------------------------------


def overall_share(attempts: list[Attempt]) -> float:
    """The student's share of marks over everything, smoothed so that one question cannot make it 0 or 1."""
    return (sum(a.fraction * a.tries for a in attempts) + 1) / (sum(a.tries for a in attempts) + 2)


def estimate(name: str, attempts: list[Attempt], centre: float, params: Tracing | None, trace_from: int = TRACE_FROM) -> Mastery:
    """One topic's (or type's) mastery: Beta posterior below `trace_from` attempts, knowledge tracing from there."""
    mean, a, b, method, known = _estimate(attempts, centre, params, trace_from)
    low, high = beta_interval(a, b)
    return Mastery(name=name, mastery=mean, low=low, high=high, method=method, known=known, attempts=len(attempts),
                   marks=sum(x.marks for x in attempts), out_of=sum(x.out_of for x in attempts))


def _estimate(attempts: list[Attempt], centre: float, params: Tracing | None,
              trace_from: int) -> tuple[float, float, float, str, float | None]:
    """(mean, Beta a, Beta b, method, P(known)): the interval is the Beta's; tracing moves its centre, the evidence sets its width."""
    earned = sum(x.fraction * x.tries for x in attempts)
    tries = sum(x.tries for x in attempts)
    a, b = PRIOR_STRENGTH * centre + earned, PRIOR_STRENGTH * (1 - centre) + tries - earned
    if params is None or len(attempts) < trace_from:
        return a / (a + b), a, b, "beta" if attempts else "prior", None
    # The prior is the student's own: the P(known) that their overall share implies (an individualised prior, as in
    # Pardos & Heffernan 2010). Ability carries across topics; the fitted class prior knows nothing of this student.
    prior = min(0.95, max(0.05, (centre - params.guess) / (1 - params.slip - params.guess)))
    known = known_after(params.model_copy(update={"prior": prior}), [(x.fraction, x.tries) for x in attempts])
    mean = expected_share(params, known)
    return mean, mean * (a + b), (1 - mean) * (a + b), "tracing", known


def beta_interval(a: float, b: float, level: float = INTERVAL) -> tuple[float, float]:
    """The central interval of Beta(a, b), from 20,000 seeded draws: numpy only, the same numbers every run, within 0.005."""
    import numpy as np

    draws = np.random.default_rng(0).beta(a, b, 20_000)
    low, high = np.quantile(draws, [(1 - level) / 2, (1 + level) / 2])
    return float(low), float(high)


# --- the plan --------------------------------------------------------------------------------------------


def shortfall(e: Mastery) -> float:
    """How far a topic is from learnt, in [0, 1]: 1 - P(known) under knowledge tracing, else 1 - mastery."""
    return 1 - e.known if e.known is not None else 1 - e.mastery


def make_plan(kit, bank, attempts: list[Attempt], *, days: int = 7, per_topic: int = 3, student: str | None = None) -> StudyPlan:
    """The study plan for one student: topics by weakness, each with its reason, practice and reviews, and a schedule.

    Every student's attempts in `attempts` inform the tracing fit (a class's
    file fits each topic on its own); the plan is for `student`, who may be
    left out when the file has one.
    """
    if days < 1:
        raise TutorError(f"--days must be 1 or more, got {days}")
    mine = _students_attempts(attempts, student)
    params = fit_params(attempts)
    centre = overall_share(mine)
    by_topic = _grouped(mine, "topic")
    weights = kit.subject.topic_weights
    estimates = [estimate(topic, by_topic.get(topic, []), centre, params.get(topic)) for topic in kit.subject.topics]
    estimates.sort(key=lambda e: (-shortfall(e) * weights.get(e.name, 1.0), e.name))
    start = max((a.at for a in mine if a.at), default=None)
    reviews = _reviews(mine, start, days, [e.name for e in estimates])
    done = {a.question_id for a in mine}
    topics = [TopicPlan(rank=rank, topic=e.name, weight=weights.get(e.name, 1.0), weakness=shortfall(e) * weights.get(e.name, 1.0),
                        estimate=e, reason=reason(e, by_topic.get(e.name, [])),
                        practice=practice(kit, bank, e.name, e.mastery, done, per_topic), reviews=reviews.get(e.name, []))
              for rank, e in enumerate(estimates, start=1)]
    type_params = fit_params(attempts, "type")
    types = sorted((estimate(name, group, centre, type_params.get(name)) for name, group in _grouped(mine, "type").items()),
                   key=lambda e: (e.mastery, e.name))
    overall = estimate("overall", mine, 0.5, None, trace_from=len(mine) + 1)
    return StudyPlan(subject=kit.subject.name, student=mine[0].student, days=days, start=start.date() if start else None,
                     attempts=len(mine), overall=overall, topics=topics, types=types, schedule=schedule(topics, days, start),
                     tracing={topic: params[topic] for topic in by_topic})


def _students_attempts(attempts: list[Attempt], student: str | None) -> list[Attempt]:
    """The attempts of the student the plan is for: `student`, or the only one in the file."""
    if not attempts:
        raise TutorError("no usable results: every row was left out (see the lines above), or the file is empty")
    students = sorted({a.student for a in attempts}, key=str)
    if student is None and len(students) > 1:
        raise TutorError(f"the results hold {len(students)} students; choose one with --student: "
                         f"{', '.join(str(s) for s in students)}")
    if student is not None and student not in students:
        raise UnknownName("student", student, [str(s) for s in students])
    chosen = student if student is not None else students[0]
    return sorted((a for a in attempts if a.student == chosen), key=lambda a: a.order)


def _grouped(attempts: Iterable[Attempt], key: str) -> dict[str, list[Attempt]]:
    groups: dict[str, list[Attempt]] = {}
    for a in attempts:
        groups.setdefault(getattr(a, key), []).append(a)
    return groups


def reason(e: Mastery, attempts: list[Attempt]) -> str:
    """Why a topic stands where it does: its marks, and the marking points missed, quoted."""
    if not attempts:
        return f"Not attempted yet: {e.mastery:.0%} is your overall share of marks, a guess until you try some."
    text = f"{e.marks:g}/{e.out_of:g} marks over {len(attempts)} question{'s' * (len(attempts) > 1)}."
    missed = list(dict.fromkeys(point for a in reversed(attempts) for point in a.missed))  # newest first, each once
    if missed:
        quotes = "; ".join(f"\u201c{_short(point, QUOTE_CHARS)}\u201d" for point in missed[:QUOTED])
        more = f" (and {len(missed) - QUOTED} more)" if len(missed) > QUOTED else ""
        return f"{text} Missed: {quotes}{more}."
    lowest = min(attempts, key=lambda a: (a.fraction, -a.order))
    if lowest.fraction < 1:
        return f"{text} Lowest: {lowest.marks:g}/{lowest.out_of:g} on {lowest.question_id} ({lowest.type})."
    return f"{text} Full marks on every one."


def practice(kit, bank, topic: str, mastery: float, done: set[str], count: int) -> list[Practice]:
    """Up to `count` questions of the topic not yet attempted, around the difficulty that fits the mastery.

    Questions are ranked easiest to hardest (format, then marks); the pick is
    centred at the mastery's quantile of that ranking, so a student at 20%
    gets the short ones and one at 90% the long ones.
    """
    fresh = sorted((q for q in bank.questions if q.topic == topic and q.id not in done), key=lambda q: (_difficulty(kit, q), q.id))
    if not fresh or count < 1:
        return []
    centre = mastery * (len(fresh) - 1)
    chosen = sorted(range(len(fresh)), key=lambda i: (abs(i - centre), i if mastery < 0.5 else -i))[:count]
    picked = [fresh[i] for i in sorted(chosen)]
    return [Practice(question_id=q.id, type=q.type, marks=q.marks, stem=_short(q.stem, STEM_CHARS)) for q in picked]


def _difficulty(kit, question: Question) -> tuple[int, int]:
    qtype = kit.types.get(question.type)
    return FORMAT_RANK.get(qtype.format if qtype else "", 1), question.marks


def _short(text: str, limit: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[:limit - 1].rstrip() + "\u2026"


# --- reviews: FSRS ---------------------------------------------------------------------------------------


def rating(share: float) -> str:
    """FSRS's rating of an attempt, from its share of marks: under half Again, under 3/4 Hard, under all Good, all Easy."""
    return "Again" if share < 0.5 else "Hard" if share < 0.75 else "Good" if share < 1 else "Easy"


def _reviews(attempts: list[Attempt], start: datetime | None, days: int, order: list[str]) -> dict[str, list[Review]]:
    """Per topic, the questions whose latest attempt missed marks, with their FSRS review days inside the plan.

    Each attempt is a review at its time (at the plan's start when undated).
    Then the plan's days are walked through: a day takes up to REVIEWS_PER_DAY
    of the cards due, those with the lowest share of marks and in the weakest
    topics (`order`) first, the rest wait a day; each review is assumed to go
    well (Good), and FSRS puts the next one from the day it was done.
    """
    try:
        from fsrs import Card, Rating, Scheduler
    except ImportError:
        raise TutorError("study plans schedule reviews with the fsrs package, which is not installed: pip install 'fsrs>=6,<7'") from None

    # Day-long steps, not minutes: a plan is in days. No fuzz: the same results give the same plan.
    scheduler = Scheduler(learning_steps=(), relearning_steps=(), enable_fuzzing=False)
    start = start or datetime(2000, 1, 1, tzinfo=timezone.utc)  # undated results: only day numbers are shown
    cards: dict[str, tuple[Any, Attempt, list[int]]] = {}  # question id -> (its card, its latest attempt, its review days)
    for card_id, (question_id, tries) in enumerate(_grouped(attempts, "question_id").items(), start=1):
        if tries[-1].fraction < 1:
            card = Card(card_id=card_id)  # an explicit id: without one, py-fsrs sleeps 1 ms per card to make a unique one
            for a in tries:
                card, _ = scheduler.review_card(card, Rating[rating(a.fraction)], a.at or start)
            cards[question_id] = (card, tries[-1], [])
    rank = {topic: i for i, topic in enumerate(order)}
    for day in range(1, days + 1):
        due = sorted((qid for qid, (card, _, _) in cards.items() if _day(card.due, start) <= day),
                     key=lambda qid: (cards[qid][1].fraction, rank.get(cards[qid][1].topic, len(rank)), qid))
        for qid in due[:REVIEWS_PER_DAY]:
            card, last, on = cards[qid]
            card, _ = scheduler.review_card(card, Rating.Good, start + timedelta(days=day))
            cards[qid] = (card, last, [*on, day])
    reviews: dict[str, list[Review]] = {}
    for qid, (card, last, on) in cards.items():
        reviews.setdefault(last.topic, []).append(Review(question_id=qid, rating=rating(last.fraction), days=on, missed=last.missed,
                                                         next_after=None if on else max(_day(card.due, start), days + 1)))
    return reviews


def _day(moment: datetime, start: datetime) -> int:
    """The plan day a time falls on: day 1 is the 24 hours after the start; anything before is day 1 too."""
    return max(1, math.ceil((moment - start) / timedelta(days=1)))


# --- the schedule -------------------------------------------------------------------------------------------


def schedule(topics: list[TopicPlan], days: int, start: datetime | None) -> list[Day]:
    """Day by day: the reviews due, and the practice spread evenly, weakest topic first in every round.

    A day with nothing else goes over the missed points of the weakest topics
    in turn, so every day of the plan has something to do.
    """
    rounds = max((len(t.practice) for t in topics), default=0)
    queue = [Task(kind="practice", topic=t.topic, question_id=p.question_id, note=f"{p.type}, {p.marks} mark{'s' * (p.marks > 1)}")
             for r in range(rounds) for t in topics if r < len(t.practice) for p in [t.practice[r]]]
    plan = []
    for day in range(1, days + 1):
        tasks = [Task(kind="review", topic=t.topic, question_id=r.question_id, note=f"last attempt rated {r.rating}")
                 for t in topics for r in t.reviews if day in r.days]
        tasks += queue[(day - 1) * len(queue) // days: day * len(queue) // days]
        if not tasks:
            weak = topics[(day - 1) % min(len(topics), 3)]
            tasks = [Task(kind="recap", topic=weak.topic, note="go over the marking points missed and the notes")]
        plan.append(Day(day=day, on=(start + timedelta(days=day)).date() if start else None, tasks=tasks))
    return plan


# --- output ------------------------------------------------------------------------------------------------


def write_plan(plan: StudyPlan, folder: Path) -> dict[str, Path]:
    """plan.md, plan.json and mastery.png in `folder`, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    paths = {name: folder / name for name in (PLAN_MD, PLAN_JSON, MASTERY_PNG)}
    write_atomic(paths[PLAN_JSON], plan.model_dump_json(indent=2) + "\n")
    plot_mastery(plan, paths[MASTERY_PNG])
    write_atomic(paths[PLAN_MD], render(plan))
    return paths


def render(plan: StudyPlan) -> str:
    """plan.md's text."""
    who = f" for {plan.student}" if plan.student else ""
    since = f" (day 1 is the day after {plan.start})" if plan.start else ""
    o = plan.overall
    lines = [f"# {plan.subject.title()} study plan{who}, {plan.days} days{since}", "",
             f"From {plan.attempts} results: {o.marks:g}/{o.out_of:g} marks overall ({o.mastery:.0%}, 90% interval {_range(o)}).", "",
             "Mastery is the share of marks to expect on the next question of a topic, with its 90% interval: a topic "
             f"seen a few times is uncertain, and the interval says how much. From {TRACE_FROM} attempts on, knowledge tracing "
             "weighs recent attempts more; P(known) is its chance that the topic is learnt (mastery stays below 1 even then: "
             "marks still slip). Topics are ranked by how far they are from learnt (1 - P(known), else 1 - mastery) "
             "x their syllabus weight.", "",
             "## Topics, weakest first", "",
             *_table(["#", "topic", "mastery", "90% interval", "P(known)", "attempts", "marks", "weight", "method"],
                     [[str(t.rank), t.topic, f"{t.estimate.mastery:.2f}", _range(t.estimate),
                       "-" if t.estimate.known is None else f"{t.estimate.known:.2f}", str(t.estimate.attempts),
                       f"{t.estimate.marks:g}/{t.estimate.out_of:g}", f"{t.weight:g}", t.estimate.method] for t in plan.topics]),
             "", f"![mastery]({MASTERY_PNG})", ""]
    for t in plan.topics:
        lines += [f"### {t.rank}. {t.topic}", "", t.reason, ""]
        if t.practice:
            lines += ["Practice (not yet attempted):", ""]
            lines += [f"- `{p.question_id}` {p.type}, {p.marks} mark{'s' * (p.marks > 1)}: {p.stem}" for p in t.practice]
            lines.append("")
        if t.reviews:
            lines += ["Reviews of questions missed:", ""]
            lines += [f"- `{r.question_id}` (last attempt rated {r.rating}): {_when_reviewed(r)}" for r in t.reviews]
            lines.append("")
    if plan.types:
        lines += ["## By question type", "",
                  *_table(["type", "mastery", "90% interval", "attempts", "marks"],
                          [[m.name, f"{m.mastery:.2f}", _range(m), str(m.attempts), f"{m.marks:g}/{m.out_of:g}"] for m in plan.types]), ""]
    lines += ["## Schedule", ""]
    for day in plan.schedule:
        lines.append(f"**Day {day.day}**" + (f" ({day.on})" if day.on else ""))
        lines += [f"- {task.kind}: {task.topic}" + (f" `{task.question_id}`" if task.question_id else "")
                  + (f" ({task.note})" if task.note else "") for task in day.tasks]
        lines.append("")
    return "\n".join(lines)


def _when_reviewed(r: Review) -> str:
    if r.days:
        return f"day{'s' * (len(r.days) > 1)} {', '.join(map(str, r.days))}"
    return f"not within the plan: next on day {r.next_after}"


def plan_table(plan: StudyPlan) -> str:
    """The plan's topics as a plain-text table for the terminal."""
    rows = [[str(t.rank), t.topic, f"{t.estimate.mastery:.2f}", _range(t.estimate), str(t.estimate.attempts),
             f"{t.estimate.marks:g}/{t.estimate.out_of:g}", f"{t.weight:g}", str(len(t.practice)),
             str(sum(len(r.days) for r in t.reviews))] for t in plan.topics]
    header = ["#", "topic", "mastery", "90%", "attempts", "marks", "weight", "practice", "reviews"]
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    return "\n".join("  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip() for row in [header, *rows])


def _range(m: Mastery) -> str:
    return f"{m.low:.2f}\u2013{m.high:.2f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(header) + " |", "|" + "---|" * len(header), *("| " + " | ".join(row) + " |" for row in rows)]


def plot_mastery(plan: StudyPlan, out: Path) -> None:
    """Horizontal bars per topic, weakest at the top, with the 90% interval as whiskers; hatched where nothing was attempted."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    topics = plan.topics
    fig, ax = plt.subplots(figsize=(7.5, 1.8 + 0.45 * len(topics)), dpi=120)
    ys = range(len(topics))
    values = [t.estimate.mastery for t in topics]
    errors = [[t.estimate.mastery - t.estimate.low for t in topics], [t.estimate.high - t.estimate.mastery for t in topics]]
    methods = {"tracing": "knowledge tracing", "beta": "Beta posterior", "prior": "not attempted: overall share"}
    bars = ax.barh(ys, values, xerr=errors, capsize=3, color=[f"C{list(methods).index(t.estimate.method)}" for t in topics])
    for bar, t in zip(bars, topics):
        bar.set_label(methods[t.estimate.method] if t.estimate.method not in [x.estimate.method for x in topics[:t.rank - 1]] else None)
        if t.estimate.method == "prior":
            bar.set_hatch("//")
            bar.set_alpha(0.5)
    ax.legend(fontsize=8, loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, frameon=False)
    ax.set_yticks(list(ys), [f"{t.topic} ({t.estimate.attempts})" + (f" \u00d7{t.weight:g}" if t.weight != 1 else "") for t in topics])
    ax.invert_yaxis()
    ax.set_xlim(0, 1)
    ax.set_xlabel("expected share of marks on the next question (whiskers: 90% interval)")
    ax.set_title(f"{plan.subject.title()}: mastery by topic, weakest first", fontsize=10)
    ax.set_ylabel("topic (attempts) \u00d7 syllabus weight", fontsize=8)
    ax.grid(axis="x", alpha=0.3)
    fig.tight_layout()
    tmp = out.with_name(f".{out.name}.tmp.png")
    try:
        fig.savefig(tmp)
        os.replace(tmp, out)  # a reader never sees half a PNG
    finally:
        plt.close(fig)
        tmp.unlink(missing_ok=True)


# --- simulation: does the estimate predict? -------------------------------------------------------------

METHODS = ("estimate", "estimate, one student", "beta only", "raw", "base rate", "chance")  # what simulate() compares
WORLDS = ("mastery", "tracing")
SIM_MARKS = (1, 1, 1, 1, 2, 3, 4, 6, 8)  # marks of simulated questions: mostly one-mark, as in a bank with MCQs and structured parts


def simulate_students(students: int, attempts: int, topics: int, seed: int,
                      world: str = "mastery") -> tuple[list[Attempt], dict[tuple[str, str], float]]:
    """Simulated students with a known mastery of each topic, their answers drawn from it, learning as they go.

    Two worlds, so that the estimate is not only tested on its own model:
      - mastery: each (student, topic) has a mastery p, the chance of each
        mark, from the student's ability and the topic's difficulty; it rises
        a little at every attempt at the topic (its log-odds by 0 to 0.3);
      - tracing: BKT's own world: the student knows the topic or not (from
        ability and difficulty), may learn it at each attempt, and earns each
        mark with 1 - slip when known, guess when not.
    Returns the attempts (time-ordered per student) and each (student, topic)'s
    mastery at the start (the chance of a mark; in the tracing world, of knowing it).
    """
    import numpy as np

    if world not in WORLDS:
        raise UnknownName("simulated world", world, list(WORLDS))
    rng = np.random.default_rng(seed)
    difficulty = rng.normal(0, 0.8, topics)
    guess, slip = rng.uniform(0.1, 0.3, topics), rng.uniform(0.05, 0.2, topics)
    out, truth, order = [], {}, 0
    for s in range(students):
        logits = rng.normal(0, 1.0) - difficulty
        start = 1 / (1 + np.exp(-logits))
        known = rng.random(topics) < start
        learn = rng.uniform(0.02, 0.2, topics) if world == "tracing" else rng.uniform(0, 0.3, topics)
        truth.update({(f"s{s}", f"t{t}"): float(start[t]) for t in range(topics)})
        for _ in range(attempts):
            t = int(rng.integers(topics))
            marks = int(rng.choice(SIM_MARKS))
            item = rng.normal(0, 0.8)  # questions of one topic differ in difficulty too
            chance = (1 - slip[t] if known[t] else guess[t]) if world == "tracing" else 1 / (1 + np.exp(item - logits[t]))
            earned = int(rng.binomial(marks, chance))
            out.append(Attempt(question_id=f"t{t}-{order}", topic=f"t{t}", type=f"sim-{marks}", marks=earned, out_of=marks,
                               order=order, student=f"s{s}"))
            order += 1
            known[t] = known[t] or rng.random() < learn[t]
            logits[t] += learn[t]
    return out, truth


def simulate(students: int = 300, attempts: int = 40, topics: int = 8, *, seed: int = 0, split: float = 0.7,
             trace_from: int = TRACE_FROM, world: str = "mastery") -> dict[str, dict[str, float]]:
    """Predict each student's later attempts from the earlier ones; AUC and log-loss per method, over every mark.

    Time-ordered split per student: the first `split` of their attempts fit
    and estimate, the rest are predicted, each from the estimate at the split.
    Methods:
      - estimate: this module's mastery (Beta, then tracing from `trace_from`
        attempts), tracing fitted on every student's first part (a class);
      - estimate, one student: the same with tracing fitted on that student's
        own first part only (what `plan` does with one student's file);
      - beta only: the Beta posterior at any number of attempts;
      - raw: the share of marks so far in the topic (the student's overall
        share where the topic has none);
      - base rate: everyone's share of marks in the first parts;
      - chance: 0.5.
    Probabilities are clipped to [0.01, 0.99] before the log-loss.
    """
    simulated, _ = simulate_students(students, attempts, topics, seed, world)
    train, test = [], []
    for rows in _grouped(simulated, "student").values():
        cut = int(len(rows) * split)
        train += rows[:cut]
        test += rows[cut:]
    class_params = fit_params(train)
    base = sum(a.marks for a in train) / sum(a.out_of for a in train)
    train_of = _grouped(train, "student")
    predictions: dict[str, list[float]] = {name: [] for name in METHODS}
    seen: dict[tuple[str, str], int] = {}
    own_params: dict[str, dict[str, Tracing]] = {}
    for a in test:
        mine = train_of.get(a.student, [])
        in_topic = [x for x in mine if x.topic == a.topic]
        ahead = seen.get((a.student, a.topic), 0)
        seen[a.student, a.topic] = ahead + 1
        centre = overall_share(mine)
        if a.student not in own_params:
            own_params[a.student] = fit_params(mine)
        own = own_params[a.student].get(a.topic) or next(iter(own_params[a.student].values()), DEFAULT)
        predictions["estimate"].append(_predict(in_topic, centre, class_params.get(a.topic), trace_from, ahead))
        predictions["estimate, one student"].append(_predict(in_topic, centre, own, trace_from, ahead))
        predictions["beta only"].append(_predict(in_topic, centre, None, trace_from, ahead))
        predictions["raw"].append(sum(x.marks for x in in_topic) / sum(x.out_of for x in in_topic) if in_topic
                                  else sum(x.marks for x in mine) / sum(x.out_of for x in mine) if mine else 0.5)
        predictions["base rate"].append(base)
        predictions["chance"].append(0.5)
    labels, repeats = _mark_labels(test)
    return {name: score(labels, _repeat(values, repeats)) for name, values in predictions.items()}


def _predict(in_topic: list[Attempt], centre: float, params: Tracing | None, trace_from: int, ahead: int) -> float:
    mean, _, _, method, known = _estimate(in_topic, centre, params, trace_from)
    return expected_share(params, known, ahead) if method == "tracing" else mean


def _mark_labels(attempts: list[Attempt]) -> tuple[list[int], list[int]]:
    """Every mark of every attempt as a 0/1 outcome (earned or not), and how many marks each attempt has."""
    labels, repeats = [], []
    for a in attempts:
        earned, total = round(a.marks), round(a.out_of)
        labels += [1] * earned + [0] * (total - earned)
        repeats.append(total)
    return labels, repeats


def _repeat(values: list[float], repeats: list[int]) -> list[float]:
    return [v for v, n in zip(values, repeats) for _ in range(n)]


def score(labels: list[int], predicted: list[float]) -> dict[str, float]:
    """AUC (ties count half) and log-loss (predictions clipped to [0.01, 0.99]) of predictions against 0/1 outcomes."""
    import numpy as np

    y, p = np.asarray(labels, dtype=float), np.clip(np.asarray(predicted, dtype=float), 0.01, 0.99)
    order = np.argsort(p, kind="mergesort")
    ranks = np.empty(len(p))
    sorted_p = p[order]
    starts = np.r_[0, np.flatnonzero(np.diff(sorted_p)) + 1]
    ends = np.r_[starts[1:], len(p)]
    for lo, hi in zip(starts, ends):  # tied predictions share their average rank
        ranks[order[lo:hi]] = (lo + hi + 1) / 2
    positives = y.sum()
    negatives = len(y) - positives
    auc = (ranks[y == 1].sum() - positives * (positives + 1) / 2) / (positives * negatives) if positives and negatives else 0.5
    loss = -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p))
    return {"auc": float(auc), "log_loss": float(loss), "marks": int(len(y))}

