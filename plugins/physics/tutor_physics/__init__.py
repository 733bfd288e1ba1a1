"""Physics for tutor: Cambridge International AS & A Level (9702) and IGCSE (0625).

Everything subject-specific lives in files beside this one: question types and
their answering guides in types.toml, the sample bank in bank/, prompt
overrides in templates/. This module only registers them.
"""

from pathlib import Path

from tutor import DiagramFormat, Subject, hookimpl, read_question_types

HERE = Path(__file__).parent

SUBJECT = Subject(
    name="physics",
    title="Physics",
    syllabus="Cambridge International AS & A Level Physics (9702) and Cambridge IGCSE Physics (0625)",
    topics=["mechanics", "materials", "waves", "electricity", "fields", "thermal", "nuclear", "quantum"],
    diagram_formats=["tikz", "circuitikz"],
    bank=HERE / "bank",
)

CIRCUITIKZ = DiagramFormat(
    name="circuitikz",
    title="circuitikz circuit diagram",
    preamble=r"""
\usepackage{amsmath}
\usepackage{siunitx}
\usepackage[european]{circuitikz}
\usetikzlibrary{arrows.meta,calc}
""",
    environment="circuitikz",
    keywords=("circuit", "resistor", "battery", "cell", "ammeter", "voltmeter", "thermistor", "LDR", "diode", "potential divider", "switch", "lamp", "galvanometer"),
    example=r"""\begin{circuitikz}
  \draw (0,0) to[battery1, l=$12\,\mathrm{V}$] (0,3)
        to[R, l={$R_1 = 4.0\,\Omega$}] (4,3)
        to[lamp, l=$L$] (4,0)
        to[rmeter, t=A] (0,0);
\end{circuitikz}""",
)


@hookimpl
def register_subjects(register):
    register(SUBJECT)


@hookimpl
def register_question_types(register):
    for qtype in read_question_types(HERE / "types.toml", SUBJECT.name):
        register(qtype)


@hookimpl
def register_prompt_templates(register):
    register(HERE / "templates", subject=SUBJECT.name)


@hookimpl
def register_diagram_formats(register):
    register(CIRCUITIKZ)
