"""The core's GRPO rewards: mark-points, format-length, diagram-compiles, novelty and diversity."""

import json
import shutil

import pytest
from tutor.diagrams import Renderer
from tutor.errors import TutorError
from tutor.models import Question, RewardBatch, Subject
from tutor.registry import get_subject, registry

TOY = Subject(name="toy", title="Toy", syllabus="none", topics=["t"])
needs_physics = pytest.mark.skipif("physics" not in registry().subjects, reason="tutor-physics is not installed")
needs_tex = pytest.mark.skipif(shutil.which("pdflatex") is None, reason="pdflatex is not installed")


def score(name, task, completions, questions=None, subject=TOY, formats=None, groups=None, bank=(), compile=None):
    n = len(completions)
    batch = RewardBatch(task, completions, ["prompt"] * n, questions if questions is not None else [None] * n,
                        formats or [""] * n, groups or list(range(n)), subject, list(bank), compile)
    scores = registry().rewards[name].score(batch)
    assert len(scores) == n and all(0.0 <= s <= 1.0 for s in scores)
    return scores


def physics_bank() -> list[Question]:
    path = get_subject("physics").subject.bank / "questions.jsonl"
    return [Question.model_validate(json.loads(line)) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def toy_question(**fields) -> Question:
    base = {"subject": "toy", "type": "short", "topic": "t", "source": {"name": "t"}, "stem": "A trolley is pushed along a track."}
    return Question.model_validate(base | fields)


def words(n: int) -> str:
    return " ".join(["word"] * n)


def test_rewards_are_registered_for_their_tasks():
    tasks = {name: reward.task for name, reward in registry().rewards.items()}
    core = {"mark-points": "answer", "format-length": "answer", "diagram-compiles": "diagram", "novelty": "set", "diversity": "set"}
    assert tasks | core == tasks
    assert tasks["mcq-correct"] == "answer"


# --- mark-points -------------------------------------------------------------------------


@needs_physics
def test_mark_points_rewards_an_answer_that_states_the_points():
    question = next(q for q in physics_bank() if q.stem.startswith("A sealed metal can contains air."))
    stating = ("(a) The molecules move randomly in all directions at high speed, in straight lines between collisions.\n"
               "(b) Molecules collide with the walls and rebound; the change of momentum means each collision exerts a force, "
               "and pressure is force per unit area.\n"
               "(c) Heated molecules gain kinetic energy and move faster, so they collide with the walls more frequently, "
               "and each collision exerts a greater force, so the force per unit area increases.")
    partial = "(a) The molecules move randomly in all directions at high speed, in straight lines between collisions."
    off_topic = "The demand curve shifts right when incomes rise, so the equilibrium price and quantity both increase."
    good, some, off = score("mark-points", "answer", [stating, partial, off_topic], [question] * 3, subject=get_subject("physics").subject)
    assert good == 1.0 and some == pytest.approx(2 / 7) and off == 0.0


def test_mark_points_counts_marks_of_covered_points_per_part():
    question = toy_question(
        marks=8,
        parts=[{"label": "a", "text": "Describe the motion.", "marks": 2}, {"label": "b", "text": "Find v after 4.0 s.", "marks": 2},
               {"label": "c", "text": "Discuss the safety of the track.", "marks": 4}],
        mark_scheme={
            "points": [
                {"text": "the trolley accelerates uniformly", "part": "a"},
                {"text": "the resultant force on it is constant; accept: the net force does not change", "part": "a"},
                {"text": "v = u + at = 3.0 + 2.0 × 4.0", "part": "b"},
                {"text": "v = 11 m s^-1", "part": "b"},
                {"text": "its kinetic energy increases", "part": "b"},  # points offer 3 marks for a 2-mark part
            ],
            "levels": [{"level": 1, "marks": [1, 2], "descriptor": "some safety points", "part": "c"},
                       {"level": 2, "marks": [3, 4], "descriptor": "a reasoned discussion", "part": "c"}],
        },
    )
    completions = [
        "(a) Its acceleration is uniform, because the net force does not change. (b) v = 3 + 2 × 4 = 11.0 m/s",  # all 4 point marks
        "(a) It speeds up. (b) v = 3 + 2 × 4 = 11.0 m/s, and its kinetic energy increases.",  # b capped at its 2 marks
        "(b) v = 11 m/s",  # one number-only point
        "(b) v = 11.4 m/s",  # 11.4 is not 11 to 3 s.f.
        "The trolley accelerates uniformly.",
    ]
    levelled_only = toy_question(marks=4, mark_scheme={"levels": [{"level": 1, "marks": [1, 4], "descriptor": "anything"}]})
    scores = score("mark-points", "answer", [*completions, "The trolley accelerates.", "anything"], [question] * 5 + [levelled_only, None])
    assert scores == [1.0, 0.5, 0.25, 0.0, 0.25, 0.0, 0.0]


def trolley_question() -> Question:
    return toy_question(
        marks=6,
        parts=[{"label": "a", "text": "Describe the motion.", "marks": 2}, {"label": "b", "text": "Find v after 4.0 s.", "marks": 2},
               {"label": "c", "text": "Discuss the safety of the track.", "marks": 2}],
        mark_scheme={
            "points": [{"text": "the trolley accelerates uniformly", "part": "a"},
                       {"text": "the resultant force on it is constant", "part": "a"},
                       {"text": "v = 11 m s^-1", "part": "b", "marks": 2}],
            "levels": [{"level": 1, "marks": [1, 2], "descriptor": "some safety points", "part": "c"}],
        },
    )


def test_mark_points_is_an_evaluator_registered_through_the_hook():
    """eval and `mark` need point coverage as much as GRPO does: it is an evaluator, the core's own, found like any plugin's."""
    evaluator = registry().evaluators["mark-points"]
    assert registry().owner["evaluator", "mark-points"] == "tutor.default_plugins.evaluators"
    assert {"structured", "essay", "calculation", "mcq"} <= set(evaluator.formats)
    score = evaluator.score(trolley_question(), "(a) It accelerates uniformly. (b) v = 11.0 m/s")
    assert (score.marks, score.out_of) == (3, 4)  # part c is levelled: not in out_of
    found, missed, levelled = score.feedback.splitlines()
    assert found == "found: (a) the trolley accelerates uniformly [1]; (b) v = 11 m s^-1 [2]"
    assert missed == "missed: (a) the resultant force on it is constant [1]"
    assert levelled == "marked by levels, not by points: (c)"
    nothing = evaluator.score(toy_question(marks=4, mark_scheme={"levels": [{"level": 1, "marks": [1, 4], "descriptor": "any"}]}), "x")
    assert (nothing.marks, nothing.out_of) == (0, 1) and nothing.feedback.startswith("no point-marked part")


def test_answer_rewards_are_their_evaluators_judgement(monkeypatch):
    """mcq-correct and mark-points are built from the evaluators: change the evaluator, and the reward follows."""
    from tutor.models import Evaluator, Score

    calls = []

    def judge(name, marks):
        def score(question, reply):
            calls.append((name, reply))
            return Score(marks=marks, out_of=4)
        return Evaluator(name=name, description="spy", formats=["mcq"], score=score)

    monkeypatch.setitem(registry().evaluators, "mcq", judge("mcq", 1))
    monkeypatch.setitem(registry().evaluators, "mark-points", judge("mark-points", 3))
    mcq = toy_question(marks=1, options={"A": "a", "B": "b"}, key="A", mark_scheme={"points": [{"text": "A"}]})
    question = trolley_question()
    assert score("mcq-correct", "answer", ["Answer: B", "x", "y"], [mcq, question, None]) == [0.25, 0.0, 0.0]  # only MCQs; none: 0
    assert score("mark-points", "answer", ["p", "q"], [question, None]) == [0.75, 0.0]
    assert calls == [("mcq", "Answer: B"), ("mark-points", "p")]


# --- format-length -----------------------------------------------------------------------


def test_format_length_band_edges_and_fall_off(toy):
    short = toy_question(marks=1, mark_scheme={"points": [{"text": "x"}]})  # the toy's "short" type: 40 to 250 words
    lengths = [40, 250, 39, 30, 20, 10, 251, 375, 500, 900]
    assert score("format-length", "answer", [words(n) for n in lengths], [short] * len(lengths)) == pytest.approx(
        [1.0, 1.0, 0.95, 0.5, 0.0, 0.0, 1 - 1 / 250, 0.5, 0.0, 0.0])


def test_format_length_diagram_markers(toy):
    short = toy_question(marks=1, mark_scheme={"points": [{"text": "x"}]})
    diagram = "(DIAGRAM: a velocity-time graph (a straight line through the origin) with " + words(300) + ")"
    replies = [
        words(40) + "\n" + diagram,  # a description does not count towards the length
        words(39) + " " + diagram,
        words(50) + " (DIAGRAM: a graph that is never closed",
        words(50) + " (DIAGRAM: )",
    ]
    assert score("format-length", "answer", replies, [short] * 4) == pytest.approx([1.0, 0.95, 0.0, 0.0])


def test_format_length_diagram_policy_and_mcq(toy):
    registry().types["toy"]["drawn"] = toy.types["short"].model_copy(update={"id": "drawn", "diagrams": "required"})
    drawn = toy_question(type="drawn", marks=1, mark_scheme={"points": [{"text": "x"}]})
    mcq = toy_question(type="mcq", marks=1, options={"A": "a", "B": "b"}, key="A", mark_scheme={"points": [{"text": "A"}]})
    unknown = toy_question(type="no-such-type", marks=1, mark_scheme={"points": [{"text": "x"}]})
    marker = " (DIAGRAM: free-body diagram of the trolley)"
    cases = [
        (drawn, words(100) + marker, 1.0), (drawn, words(100), 0.5),
        (mcq, "Answer: A", 1.0), (mcq, words(120), 1.0), (mcq, words(180), 0.5),  # the toy MCQ band tops out at 120
        (mcq, "Answer: A" + marker, 0.5),  # MCQ answers have no diagrams
        (unknown, words(5000), 1.0), (None, words(3), 1.0), (None, "(DIAGRAM: unclosed", 0.0),
    ]
    assert score("format-length", "answer", [c for _, c, _ in cases], [q for q, _, _ in cases]) == pytest.approx([s for _, _, s in cases])


# --- diagram-compiles --------------------------------------------------------------------

GOOD_TIKZ = "\\begin{tikzpicture}\n  \\draw[->] (0,0) -- (2,0) node[right] {$F$};\n\\end{tikzpicture}"
BROKEN_TIKZ = "\\begin{tikzpicture}\n  \\drwa[->] (0,0) -- (2,0);\n\\end{tikzpicture}"


def compiler(tmp_path, calls):
    renderer = Renderer(tmp_path)

    def compile(fmt: str, code: str) -> str | None:
        calls.append(code)
        rendering = renderer.render(registry().formats[fmt], code)
        return str(rendering.error) if rendering.error else None

    return compile


@needs_tex
def test_diagram_compiles_with_a_real_renderer(tmp_path):
    calls = []
    completions = [
        f"```latex\n{GOOD_TIKZ}\n```",
        f"```latex\n{BROKEN_TIKZ}\n```",
        f"```latex\n{GOOD_TIKZ}\n```",  # the same code again: compiled once
        f"Here it is:\n{GOOD_TIKZ}\nDone.",  # no fence: the format's extract finds the body
        "I cannot draw that.",
        "",
    ]
    scores = score("diagram-compiles", "diagram", completions, formats=["tikz"] * 6, compile=compiler(tmp_path, calls))
    assert scores == [1.0, 0.0, 1.0, 1.0, 0.0, 0.0]
    assert calls.count(GOOD_TIKZ) == 1


def test_diagram_compiles_without_a_compiler_is_a_configuration_error():
    with pytest.raises(TutorError, match="compile"):
        score("diagram-compiles", "diagram", [f"```latex\n{GOOD_TIKZ}\n```"], formats=["tikz"])


# --- novelty and diversity ---------------------------------------------------------------


@needs_physics
def test_novelty_rejects_bank_copies_and_rewards_new_questions():
    bank = physics_bank()
    source = next(q for q in bank if q.stem.startswith("A horizontal string"))
    copy = source.stem + "\n" + "\n".join(f"({p.label}) {p.text} [{p.marks}]" for p in source.parts)
    tweaked = copy.replace("0.90 m", "1.20 m").replace("120 Hz", "150 Hz")
    new = ("A student investigates how the time for a ball bearing to fall through glycerol depends on the temperature "
           "of the glycerol. (a) Describe how she keeps the temperature constant during each trial. [2] "
           "(b) Suggest why the ball bearing reaches a terminal velocity in the glycerol but not in air over the same distance. [3]")
    assert score("novelty", "set", [copy, tweaked, new, "", "  \n"], bank=bank) == [0.0, 0.0, 1.0, 0.0, 0.0]
    assert score("novelty", "set", [new], bank=[]) == [1.0]


def test_diversity_within_groups():
    a = "A car of mass 900 kg accelerates from rest to 20 m/s in 8.0 s. Calculate the resultant force on the car. [3]"
    b = "Explain, in terms of photons, why the photoelectric effect has a threshold frequency for each metal. [3]"
    c = "Describe an experiment to measure the specific heat capacity of a metal block using an electric heater. [6]"
    scores = score("diversity", "set", [a, a, b, c, a, "", b], groups=[0, 0, 1, 1, 1, 2, 3])
    assert scores[:2] == [0.0, 0.0]  # duplicates in one group
    assert all(s > 0.8 for s in scores[2:5])  # distinct questions (a here is not compared with group 0's)
    assert scores[5:] == [0.0, 1.0]  # empty scores 0; alone in its group scores 1
    near = score("diversity", "set", [a, a.replace("900 kg", "950 kg")], groups=[0, 0])
    assert near[0] == pytest.approx(near[1]) and near[0] < 0.3  # one number changed: nearly the same question


# --- the numpy TF-IDF ----------------------------------------------------------------------

CORPUS = [
    "A car of mass 900 kg accelerates from rest to 20 m/s in 8.0 s. Calculate the resultant force on the car.",
    "A car of mass 950 kg accelerates from rest to 20 m/s in 8.0 s. Calculate the resultant force on the car!",
    "Explain, in terms of photons, why the photoelectric effect has a threshold frequency. Photons, photons, photons.",
    "Describe an experiment to measure the specific heat capacity of a metal block using an electric heater.",
    "Équilibre: la force résultante est nulle. Force, force.",
    "I a x y",  # nothing of two letters or more: no terms at all
    "",
]


def reference_tfidf_cosine(queries, corpus, fit):
    """scikit-learn's TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True), written out plainly:
    a dense vector over the whole vocabulary per text, then plain dot products of the normalised vectors."""
    import math
    import re
    from collections import Counter

    def terms(text):
        tokens = re.findall(r"(?u)\b\w\w+\b", text.lower())
        return tokens + [f"{a} {b}" for a, b in zip(tokens, tokens[1:])]

    vocabulary = sorted({t for text in fit for t in terms(text)})
    n = len(fit)
    idf = {t: math.log((1 + n) / (1 + sum(t in terms(text) for text in fit))) + 1 for t in vocabulary}

    def vector(text):
        counts = Counter(terms(text))
        v = [(1 + math.log(counts[t])) * idf[t] if counts[t] else 0.0 for t in vocabulary]
        norm = math.sqrt(sum(x * x for x in v))
        return [x / norm for x in v] if norm else v

    return [[sum(a * b for a, b in zip(vector(q), vector(c))) for c in corpus] for q in queries]


def test_tfidf_cosine_equals_a_reference_tfidf():
    from tutor.rewards_text import tfidf_cosine

    # By hand: "the" and "sat" are in both texts (idf 1), the other three terms of each in one (idf 1 + ln 1.5).
    w = 1 + __import__("math").log(1.5)
    assert tfidf_cosine(["the cat sat"], ["the dog sat"], ["the cat sat", "the dog sat"])[0, 0] == pytest.approx(2 / (2 + 3 * w * w))
    import numpy as np

    queries, corpus = CORPUS, CORPUS[1:] + CORPUS[:1]  # the corpus in another order: columns follow it
    ours = tfidf_cosine(queries, corpus, CORPUS)
    assert ours.shape == (len(queries), len(corpus))
    np.testing.assert_allclose(ours, reference_tfidf_cosine(queries, corpus, CORPUS), rtol=0, atol=1e-12)
    assert ours[0, -1] == pytest.approx(1.0) and 0.5 < ours[0, 0] < 1.0  # itself; one number changed
    assert not ours[5].any() and not ours[6].any()  # no terms: similar to nothing


# --- garbage never raises ------------------------------------------------------------------

GARBAGE = [
    "", " ", "\n\t", "\x00\x01", "🙂" * 1000, "Δ∫∂ΣΩ ー中文 العربية", "x" * 300_000, "1 × 10^99999 and 2e999 and " + "9" * 5000,
    "(DIAGRAM:", "(DIAGRAM: )", ")(" * 500, "```latex\n", "```latex\n```", "\\begin{tikzpicture}", "Answer: Z" * 1000,
    " ".join(str(i) for i in range(20_000)),
]


@needs_physics
def test_garbage_completions_never_raise(tmp_path):
    bank = physics_bank()
    questions = [bank[i % len(bank)] for i in range(len(GARBAGE))]
    physics = get_subject("physics").subject
    groups = [i // 3 for i in range(len(GARBAGE))]
    for name in ["mcq-correct", "mark-points", "format-length"]:
        score(name, "answer", GARBAGE, questions, subject=physics)
        score(name, "answer", GARBAGE, subject=physics)
    for name in ["novelty", "diversity"]:
        score(name, "set", GARBAGE, subject=physics, groups=groups, bank=bank)
    if shutil.which("pdflatex"):
        score("diagram-compiles", "diagram", GARBAGE, formats=["tikz"] * len(GARBAGE), compile=compiler(tmp_path, []))
