"""`tutor plugin new NAME`: a subject plugin package that installs, is discovered and passes its tests.

The package is a subject by convention (tutor.package.SubjectPackage): files
beside an `__init__.py` with no code. The generated bank is written through the
models, so its ids are right and it validates before its author has changed a thing.
"""

from __future__ import annotations

import re
from pathlib import Path

from .errors import TutorError
from .jsonl import write_jsonl
from .models import Diagram, GoldAnswer, Question

PYPROJECT = """\
[build-system]
requires = ["hatchling>=1.25"]
build-backend = "hatchling.build"

[project]
name = "tutor-{name}"
version = "0.1.0"
description = "{title} for tutor."
requires-python = ">=3.11"
dependencies = ["tutor"]

[project.entry-points.tutor]
{name} = "tutor_{name}"

[tool.hatch.build.targets.wheel]
packages = ["tutor_{name}"]
"""

INIT = '''\
"""{title} for tutor.

A subject by convention: tutor reads the files beside this module (subject.toml,
types.toml, bank/, templates/) when it first needs them. Add hooks here only for
what files cannot say: evaluators, rewards, sources, commands (docs/plugin-guide.md).
"""
'''

SUBJECT = """\
# The subject. Every field is explained in docs/plugin-guide.md ("The subject").
name = "{name}"
title = "{title}"
syllabus = "{title} (edit: name the syllabuses you target)"
topics = ["foundations", "applications"]
diagram_formats = ["tikz"]

# The levels its question types are set at, and the qualification each stands for.
[levels]
A-Level = "{title} A Level (edit: the board, qualification and syllabus code)"
"""

GITIGNORE = """\
__pycache__/
*.py[cod]
*.egg-info/
build/
dist/
.venv/
.pytest_cache/
tutor-workspace/
"""

TYPES = '''\
# One [[types]] table per question type. See docs/plugin-guide.md for every field.

[[types]]
id = "mcq"
name = "Multiple choice"
level = "A-Level"
format = "mcq"
marking = "points"
marks = 1
answer_words = [15, 120]
guide = """
Read the stem twice and underline what it asks for. Decide on the answer before
reading the options, then check each option in turn and rule out the others
with a reason. A full-mark answer gives the reasoning in one or two sentences,
says briefly why each distractor is wrong, and ends with the line "Answer: X".
"""

[[types.exemplars]]
question = "Which option is the correct one? A first B second C third D fourth [1]"
answer = """The question asks for the correct option; only the second is. A, C and D
are each ruled out by the definition.
Answer: B"""

[[types]]
id = "short"
name = "Short structured question"
level = "A-Level"
format = "structured"
marking = "points"
answer_words = [40, 250]
diagrams = "optional"
diagram_formats = ["tikz"]
guide = """
Answer each part in order, labelled as in the question. Match the length of
each part to its marks: one creditable point per mark. Define terms precisely,
use the subject's vocabulary, and apply ideas to the context given. Where a
diagram makes the point clearer, include one and refer to it in the text.
"""

[[types.exemplars]]
question = "(a) State the key idea. [1] (b) Explain one consequence of it. [2]"
answer = """(a) The key idea, stated precisely.
(b) The idea leads to a consequence, because of a reason linked to the context."""
'''

TEST = '''\
"""The shared subject-plugin contract, run against tutor-{name}."""

from tutor.testing import SubjectPluginContract


class Test{cls}Plugin(SubjectPluginContract):
    subject = "{name}"
    distribution = "tutor-{name}"
    min_questions = 2  # grow the bank, then raise these
    min_diagrams = 1
'''

README = """\
# tutor-{name}

{title} for [tutor](https://pypi.org/project/tutor/).

    pip install -e .
    tutor --subject {name} types
    tutor --subject {name} bank validate
    pytest

Edit `tutor_{name}/subject.toml` (the subject: topics, levels),
`tutor_{name}/types.toml` (question types and their answering guides),
`tutor_{name}/bank/` (questions, gold answers, diagrams; `tutor --subject {name}
bank ids --write` fills in ids and links) and `tutor_{name}/templates/` (prompt
overrides).
"""

TUTOR_TEMPLATE = """\
You are an expert {{{{ subject.title }}}} teacher and examiner. \
You answer, explain, set and mark exam questions exactly to the standard of the mark scheme.
"""


def scaffold(name: str, parent: Path) -> Path:
    if not re.fullmatch(r"[a-z][a-z0-9_]*", name):
        raise TutorError(f"plugin name {name!r} must be lowercase letters, digits and _, starting with a letter (e.g. 'biology')")
    root = Path(parent) / f"tutor-{name}"
    if root.exists():
        raise TutorError(f"{root} already exists; choose another --path or remove it")
    package = root / f"tutor_{name}"
    title = name.replace("_", " ").title()
    files = {
        root / "pyproject.toml": PYPROJECT.format(name=name, title=title),
        root / "README.md": README.format(name=name, title=title),
        root / ".gitignore": GITIGNORE,
        package / "__init__.py": INIT.format(name=name, title=title),
        package / "subject.toml": SUBJECT.format(name=name, title=title),
        package / "types.toml": TYPES,
        package / "templates" / "_tutor.j2": TUTOR_TEMPLATE.format(),
        root / "tests" / f"test_{name}_plugin.py": TEST.format(name=name, cls=title.replace(" ", "")),
    }
    for path, text in files.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text, encoding="utf-8")
    _write_sample_bank(package / "bank", name)
    return root


def _write_sample_bank(bank: Path, subject: str) -> None:
    source = {"name": f"tutor-{subject} sample bank"}
    mcq = Question.model_validate({
        "subject": subject, "type": "mcq", "topic": "foundations", "marks": 1, "source": source,
        "stem": "Which option is the second one listed? (Replace this sample with a real question.)",
        "options": {"A": "the first", "B": "the second", "C": "the third", "D": "the fourth"}, "key": "B",
        "mark_scheme": {"points": [{"text": "B", "marks": 1}]},
    })
    short = Question.model_validate({
        "subject": subject, "type": "short", "topic": "applications", "marks": 3, "source": source,
        "stem": "This sample question shows parts with marks. (Replace it with a real question.)",
        "parts": [{"label": "a", "text": "State what a marking point is.", "marks": 1},
                  {"label": "b", "text": "Explain why a mark scheme lists more points than marks.", "marks": 2}],
        "mark_scheme": {"points": [
            {"part": "a", "text": "a creditable statement that earns a mark"},
            {"part": "b", "text": "answers can earn marks in different ways"},
            {"part": "b", "text": "so examiners credit any valid point, up to the maximum"},
            {"part": "b", "text": "reference to 'max' rule"},
        ], "notes": "(b) max 2."},
    })
    write_jsonl(bank / "questions.jsonl", [mcq, short])
    write_jsonl(bank / "answers.jsonl", [
        GoldAnswer(question_id=mcq.id, author="sample bank",
                   text="The second option listed is B; A, C and D are the first, third and fourth.\nAnswer: B"),
        GoldAnswer(question_id=short.id, author="sample bank", text=(
            "(a) A marking point is a creditable statement in an answer that earns a mark.\n"
            "(b) Correct answers can earn marks in different ways, so the scheme lists every valid point "
            "and examiners credit any of them, up to the maximum for the part.\n"
            "(DIAGRAM: Flow chart: answer -> compare with marking points -> marks awarded, capped at the maximum.)"
        )),
    ])
    write_jsonl(bank / "diagrams.jsonl", [Diagram(
        description="Flow chart: answer -> compare with marking points -> marks awarded, capped at the maximum.",
        format="tikz", author="sample bank", question_id=short.id,
        code=(r"\begin{tikzpicture}[box/.style={draw, rounded corners, align=center}]" "\n"
              r"  \node[box] (a) {answer};" "\n"
              r"  \node[box, right=1cm of a] (b) {compare with\\marking points};" "\n"
              r"  \node[box, right=1cm of b] (c) {marks awarded\\(capped at max)};" "\n"
              r"  \draw[->] (a) -- (b); \draw[->] (b) -- (c);" "\n"
              r"\end{tikzpicture}"),
    )])
