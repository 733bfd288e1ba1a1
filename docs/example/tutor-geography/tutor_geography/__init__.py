"""Geography for tutor: registers the subject, its question types, templates and sample bank."""

from pathlib import Path

from tutor import Subject, hookimpl, read_question_types

HERE = Path(__file__).parent

SUBJECT = Subject(
    name="geography",
    title="Geography",
    syllabus="Geography (edit: name the syllabuses you target)",
    topics=["foundations", "applications"],
    diagram_formats=["tikz"],
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
