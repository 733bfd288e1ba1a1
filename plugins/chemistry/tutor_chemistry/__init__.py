"""Chemistry for tutor: Cambridge International AS & A Level (9701) and IGCSE (0620).

Everything subject-specific lives in files beside this one: question types and
their answering guides in types.toml, the sample bank in bank/, prompt
overrides in templates/. This module only registers them.
"""

import re
from pathlib import Path

from tutor import DiagramFormat, Subject, hookimpl, read_question_types

HERE = Path(__file__).parent

SUBJECT = Subject(
    name="chemistry",
    title="Chemistry",
    syllabus="Cambridge International AS & A Level Chemistry (9701) and Cambridge IGCSE Chemistry (0620)",
    topics=["atomic-structure", "bonding", "energetics", "kinetics", "equilibria", "redox", "inorganic", "organic", "analysis"],
    diagram_formats=["chemfig", "tikz"],
    bank=HERE / "bank",
)


class ChemfigFormat(DiagramFormat):
    """Structures and mechanisms: a body is chemfig (and mhchem) commands, not one environment."""

    def check(self, body: str) -> list[str]:
        problems = super().check(body)
        if not re.search(r"\\(chemfig|schemestart|ce)\b", body):
            problems.append("expected \\chemfig{...}, \\schemestart ... \\schemestop or \\ce{...}")
        return problems


CHEMFIG = ChemfigFormat(
    name="chemfig",
    title="chemfig structure or mechanism (with mhchem)",
    keywords=("structure", "structural", "skeletal", "displayed formula", "mechanism", "curly arrow", "molecule", "isomer", "synthesis", "reaction scheme", "formula"),
    preamble=r"""
\usepackage{amsmath}
\usepackage{chemfig}
\usepackage[version=4]{mhchem}
\setchemfig{atom sep=2em, bond offset=1pt}
""",
    example=r"""\schemestart
  \chemfig{CH_3-CH_2-Br}
  \arrow{->[\ce{OH-}][heat, aqueous]}
  \chemfig{CH_3-CH_2-OH} \+ \ce{Br-}
\schemestop""",
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
    register(CHEMFIG)
