"""Plain TikZ (with pgfplots for graphs): the diagram format every subject can fall back on."""

from tutor import hookimpl
from tutor.models import DiagramFormat

TIKZ = DiagramFormat(
    name="tikz",
    title="TikZ picture (with pgfplots)",
    preamble=r"""
\usepackage{amsmath}
\usepackage{tikz}
\usetikzlibrary{arrows.meta,calc,positioning,patterns,decorations.pathmorphing,decorations.markings,angles,quotes}
\usepackage{pgfplots}
\pgfplotsset{compat=1.18}
""",
    environment="tikzpicture",
    example=r"""\begin{tikzpicture}
  \draw[->] (0,0) -- (4,0) node[right] {$t$};
  \draw[->] (0,0) -- (0,3) node[above] {$v$};
  \draw[thick] (0,0.5) -- (3.5,2.5);
\end{tikzpicture}""",
)


@hookimpl
def register_diagram_formats(register):
    register(TIKZ)
