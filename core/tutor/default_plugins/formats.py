"""Plain TikZ (with pgfplots for graphs): the diagram format every subject can fall back on.

The format is built inside the hook: importing this module (as listing the
plugins for `tutor --help` does) must not build the models.
"""

from tutor.hookspecs import hookimpl

PREAMBLE = r"""
\usepackage{amsmath}
\usepackage{tikz}
\usetikzlibrary{arrows.meta,calc,positioning,patterns,decorations.pathmorphing,decorations.markings,angles,quotes}
\usepackage{pgfplots}
\pgfplotsset{compat=1.18}
"""

EXAMPLE = r"""\begin{tikzpicture}
  \draw[->] (0,0) -- (4,0) node[right] {$t$};
  \draw[->] (0,0) -- (0,3) node[above] {$v$};
  \draw[thick] (0,0.5) -- (3.5,2.5);
\end{tikzpicture}"""


@hookimpl
def register_diagram_formats(register):
    from tutor.models import DiagramFormat

    register(DiagramFormat(name="tikz", title="TikZ picture (with pgfplots)", preamble=PREAMBLE, environment="tikzpicture",
                           example=EXAMPLE))
