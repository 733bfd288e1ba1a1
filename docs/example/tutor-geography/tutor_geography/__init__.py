"""Geography for tutor: Cambridge IGCSE Geography (0460) style questions.

The finished example of docs/plugin-guide.md. Content lives in files beside
this module: question types and their answering guides in types.toml, the
sample bank in bank/, prompt overrides in templates/. This module registers
them, plus one evaluator (evaluators.py) and one CLI command (commands.py).
"""

from pathlib import Path

from tutor import Evaluator, Subject, hookimpl, read_question_types

HERE = Path(__file__).parent

SUBJECT = Subject(
    name="geography",
    title="Geography",
    syllabus="Cambridge IGCSE Geography (0460)",
    # The three themes of the syllabus, one slug per section a question can come from.
    topics=[
        "population", "migration", "settlement",  # population and settlement
        "plate-tectonics", "rivers", "coasts", "weather", "ecosystems",  # the natural environment
        "development",  # economic development
    ],
    diagram_formats=["tikz"],  # the core's format: cross-sections, sketch maps and graphs are all TikZ
    bank=HERE / "bank",
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
def register_evaluators(register):
    # Imported here, not at the top: the module stays cheap to import for `tutor --help`.
    from .evaluators import score_case_study_detail

    register(Evaluator(
        name="geography-case-study",
        description="Checks that a case-study answer names a specific place and gives at least one statistic.",
        formats=["essay"],
        score=score_case_study_detail,
    ))


@hookimpl
def register_commands(cli):
    from .commands import geography_topics

    cli.add_command(geography_topics)
