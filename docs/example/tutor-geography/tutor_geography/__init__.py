"""Geography for tutor: Cambridge IGCSE Geography (0460) style questions.

The finished example of docs/plugin-guide.md. The subject is found by
convention: subject.toml, types.toml, bank/ and templates/ beside this module
are read by tutor itself. The two hooks below add what files cannot: an
evaluator (evaluators.py) and a command (commands.py).
"""

from tutor import hookimpl


@hookimpl
def register_evaluators(register):
    # Imported here, not at the top: `tutor --help` imports this module, and must stay fast.
    from tutor import Evaluator

    from .evaluators import score_case_study_detail

    register(Evaluator(
        name="geography-case-study",
        description="Checks that a case-study answer names a specific place and gives at least one statistic.",
        formats=["essay"],
        score=score_case_study_detail,
        subjects=["geography"],  # geography's own check: it must not mark another subject's essays
    ))


@hookimpl
def register_commands(cli):
    from .commands import geography_topics

    cli.add_command(geography_topics)
