"""Economics for tutor: Cambridge International AS & A Level (9708) and IGCSE (0455).

Everything subject-specific lives in files beside this one: question types and
their answering guides in types.toml, the sample bank in bank/, prompt
overrides in templates/. This module only registers them.
"""

from pathlib import Path

from tutor import DiagramFormat, Subject, hookimpl, read_question_types

HERE = Path(__file__).parent

SUBJECT = Subject(
    name="economics",
    title="Economics",
    syllabus="Cambridge International AS & A Level Economics (9708) and Cambridge IGCSE Economics (0455)",
    topics=["price-system", "government-intervention", "macroeconomics", "international-trade", "development"],
    diagram_formats=["econ-graph"],
    bank=HERE / "bank",
)

# One style for every economics graph, so that axes, labels and curves look the
# same in every diagram the tutor draws: origin at 0, no numeric ticks, axis
# labels at the ends of the axes as in textbooks (the x label just right of the
# arrow tip, so it never collides with Q1, Q2 ... written under the axis).
# `guide` greys the dashed line only, so labels on it stay black.
ECON_GRAPH = DiagramFormat(
    name="econ-graph",
    title="economics graph (pgfplots, `econ axis` style)",
    preamble=r"""
\usepackage{amsmath}
\usepackage{tikz}
\usetikzlibrary{arrows.meta,calc,intersections,patterns}
\usepackage{pgfplots}
\pgfplotsset{compat=1.18}
\pgfplotsset{
  econ axis/.style={
    axis lines=left, xmin=0, ymin=0, xmax=10, ymax=10,
    xtick=\empty, ytick=\empty, clip=false, width=8cm, height=7cm,
    axis line style={-{Stealth[length=2.5mm]}},
    x label style={at={(axis description cs:1,0)}, anchor=west},
    y label style={at={(axis description cs:0,1)}, anchor=south, rotate=-90},
    every axis plot/.append style={thick, no markers, samples=50},
  },
}
\tikzset{guide/.style={dashed, thin, draw=gray}}
""",
    environment="tikzpicture",
    example=r"""\begin{tikzpicture}
\begin{axis}[econ axis, xlabel={Quantity}, ylabel={Price}]
  \addplot[domain=1:9] {10 - x} node[right] {D};
  \addplot[domain=1:9] {x} node[right] {S};
  \draw[guide] (axis cs:0,5) node[left] {$P_e$} -- (axis cs:5,5) -- (axis cs:5,0) node[below] {$Q_e$};
\end{axis}
\end{tikzpicture}""",
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
    register(ECON_GRAPH)
