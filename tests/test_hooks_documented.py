"""Every hook is part of the contract: it must be documented, and really called by the test named for it."""

import json
import os
import re
import subprocess
import sys
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


# The test that exercises each hook. It must make pluggy call the hook in its own process (tests that
# run `tutor` in a subprocess cannot be watched), which hook_recorder checks while running them.
EXERCISED_BY = {
    "register_subjects": "tests/test_cli.py::test_subjects_and_types_tables",
    "register_question_types": "tests/test_plugins.py::test_a_points_with_caps_essay_type_validates",
    "register_prompt_templates": "tests/test_prompts.py::test_lookup_order_user_then_subject_then_core",
    "register_diagram_formats": "tests/test_default_plugins.py::test_tikz_format_wraps_checks_and_extracts",
    "register_evaluators": "tests/test_default_plugins.py::test_mcq_evaluator_extracts_the_chosen_option",
    "register_sources": "tests/test_default_plugins.py::test_file_sources_read_records_with_where_they_came_from",
    "register_rewards": "tests/test_default_plugins.py::test_mcq_reward_scores_a_batch",
    "register_commands": "tests/test_plugins.py::test_plugin_commands_are_added_through_pluggy_and_a_broken_plugins_are_taken_out",
}


@pytest.fixture(scope="module")
def called(tmp_path_factory):
    """{test: hooks it called}, from one pytest run of the tests named above under hook_recorder."""
    out = tmp_path_factory.mktemp("hooks") / "called.json"
    path = os.pathsep.join(filter(None, [str(ROOT / "tests"), os.environ.get("PYTHONPATH")]))  # hook_recorder, then the caller's
    environ = os.environ | {"TUTOR_HOOKS_CALLED": str(out), "PYTHONPATH": path}
    command = [sys.executable, "-m", "pytest", "-q", "-p", "hook_recorder", "-p", "no:cacheprovider", *sorted(set(EXERCISED_BY.values()))]
    result = subprocess.run(command, cwd=ROOT, env=environ, capture_output=True, text=True)
    assert result.returncode == 0, result.stdout[-3000:]
    return json.loads(out.read_text())


@pytest.mark.parametrize("hook", HOOKS)
def test_hook_is_called_by_its_test(hook, called):
    assert hook in EXERCISED_BY, f"no test is listed for {hook} in EXERCISED_BY"
    test = EXERCISED_BY[hook]
    assert test in called, f"{test} does not exist (or did not run)"
    assert hook in called[test], f"{test} never makes pluggy call {hook}; it calls {called[test]}"


def test_links_to_docs_point_to_files_that_exist():
    """Two pages that never existed (a "collect" and a "scraping" page) were once cited from the code."""
    cited = {}
    folders = ("core", "docs", "plugins", "tests", "templates")
    files = [ROOT / "README.md", *(path for folder in folders for path in (ROOT / folder).rglob("*"))]
    for path in files:
        if path.suffix in {".py", ".md", ".toml", ".j2"} and "__pycache__" not in path.parts:
            text = path.read_text(encoding="utf-8")
            for link in re.findall(r"\bdocs/[\w./-]+\.md\b", text):
                cited.setdefault(ROOT / link, path)
            if path.suffix == ".md":  # relative links of the documents themselves
                for link in re.findall(r"\]\(([^)#:\s]+)(?:#[^)]*)?\)", text):
                    cited.setdefault((path.parent / link).resolve(), path)
    missing = {str(link.relative_to(ROOT)): str(where.relative_to(ROOT)) for link, where in cited.items() if not link.exists()}
    assert not missing, f"links to files that do not exist (link: where): {missing}"
