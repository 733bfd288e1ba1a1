"""Every hook is part of the contract: it must be documented and exercised by a test."""

import re
from pathlib import Path

import pytest

from tutor import hookspecs

ROOT = Path(__file__).resolve().parents[1]
HOOKS = sorted(name for name in dir(hookspecs) if name.startswith("register_"))


def test_there_are_hooks():
    assert len(HOOKS) == 8


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_has_a_contract_docstring(hook):
    assert len((getattr(hookspecs, hook).__doc__ or "").split()) >= 8


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_documented_in_the_plugin_guide(hook):
    guide = (ROOT / "docs" / "plugin-guide.md").read_text(encoding="utf-8")
    assert re.search(rf"^#+ .*\b{hook}\b", guide, re.MULTILINE), f"docs/plugin-guide.md has no heading for {hook}"


# Where each hook's implementations are exercised: the test must call the hook, not mention it.
EXERCISED_BY = {
    "register_subjects": "tests/test_plugins.py::test_two_plugins_claiming_one_subject_fail_naming_both",
    "register_question_types": "tests/test_cli.py::test_subjects_and_types_tables",
    "register_prompt_templates": "tests/test_prompts.py::test_lookup_order_user_then_subject_then_core",
    "register_diagram_formats": "tests/test_default_plugins.py::test_tikz_format_wraps_checks_and_extracts",
    "register_evaluators": "tests/test_default_plugins.py::test_mcq_evaluator_extracts_the_chosen_option",
    "register_sources": "tests/test_default_plugins.py::test_file_sources_read_records_with_where_they_came_from",
    "register_rewards": "tests/test_default_plugins.py::test_mcq_reward_scores_a_batch",
    "register_commands": "tests/test_plugins.py::test_a_plugin_adds_a_cli_command",
}


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_tested(hook):
    assert hook in EXERCISED_BY, f"no test is listed for {hook} in EXERCISED_BY"
    path, test = EXERCISED_BY[hook].split("::")
    assert f"def {test}(" in (ROOT / path).read_text(encoding="utf-8"), f"{EXERCISED_BY[hook]} does not exist"
