"""Plugin discovery through real entry points, in a subprocess, as `tutor` runs for a user.

Each fake plugin is a module plus a .dist-info folder on PYTHONPATH: exactly
what pip leaves behind, so importlib.metadata finds it the same way.
"""

import json
import os
import subprocess
import sys
import textwrap

import pytest

SUBJECT_PLUGIN = """
from tutor import Subject, hookimpl

@hookimpl
def register_subjects(register):
    register(Subject(name={subject!r}, title="Dupe", syllabus="none", topics=["t"]))
"""


def install(site, dist, entry, module, code):
    (site / f"{module}.py").write_text(textwrap.dedent(code))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tutor]\n{entry} = {module}\n")


def tutor(site, *args, **env):
    environ = {k: v for k, v in os.environ.items() if k != "TUTOR_LOAD_PLUGINS"} | {"PYTHONPATH": str(site), **env}
    return subprocess.run([sys.executable, "-m", "tutor.cli", *args], capture_output=True, text=True, env=environ)


@pytest.fixture
def site(tmp_path):
    install(tmp_path, "tutor-dupe-a", "dupe-a", "tutor_dupe_a", SUBJECT_PLUGIN.format(subject="dupe"))
    install(tmp_path, "tutor-dupe-b", "dupe-b", "tutor_dupe_b", SUBJECT_PLUGIN.format(subject="dupe"))
    install(tmp_path, "tutor-broken", "broken", "tutor_broken", "raise RuntimeError('missing data file')\n")
    install(tmp_path, "tutor-typo", "typo", "tutor_typo", """
        from tutor import hookimpl

        @hookimpl
        def register_subject(register):
            pass
    """)
    return tmp_path


def test_two_plugins_claiming_one_subject_fail_naming_both(site):
    result = tutor(site, "subjects")
    assert result.returncode == 1
    assert "error: subject 'dupe' is registered by two plugins: tutor-dupe-a and tutor-dupe-b; uninstall one" in result.stderr


def test_load_plugins_restricts_by_entry_or_distribution_name(site):
    result = tutor(site, "subjects", TUTOR_LOAD_PLUGINS="dupe-a")
    assert result.returncode == 0, result.stderr
    assert "dupe" in result.stdout and "warning" not in result.stderr
    result = tutor(site, "plugins", TUTOR_LOAD_PLUGINS="tutor-dupe-b")
    assert '"distribution": "tutor-dupe-b"' in result.stdout and "tutor-dupe-a" not in result.stdout


def test_a_plugin_that_raises_at_import_is_named_and_skipped(site):
    result = tutor(site, "subjects", TUTOR_LOAD_PLUGINS="broken,dupe-a")
    assert result.returncode == 0
    assert "warning: plugin 'broken' from tutor-broken was skipped: RuntimeError: missing data file" in result.stderr
    assert "dupe" in result.stdout
    result = tutor(site, "--help", TUTOR_LOAD_PLUGINS="broken")
    assert result.returncode == 0
    assert result.stderr == "warning: plugin 'broken' from tutor-broken was skipped: RuntimeError: missing data file\n"


def test_a_misspelt_hook_is_named_and_skipped(site):
    result = tutor(site, "plugins", TUTOR_LOAD_PLUGINS="typo")
    assert result.returncode == 0
    assert "warning: plugin 'typo' was skipped" in result.stderr and "register_subject" in result.stderr
    assert "tutor-typo" not in result.stdout


def test_a_plugin_adds_a_cli_command(site):
    install(site, "tutor-hello", "hello", "tutor_hello", """
        import click
        from tutor import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            @click.argument("name")
            def hello(name):
                "Say hello."
                click.echo(f"hello {name}")
    """)
    assert tutor(site, "hello", "ada", TUTOR_LOAD_PLUGINS="hello").stdout == "hello ada\n"
    listed = tutor(site, "--help", TUTOR_LOAD_PLUGINS="hello").stdout.splitlines()
    assert ["hello", "Say hello."] in [line.split(None, 1) for line in listed]


def test_a_plugin_cannot_replace_a_core_command(site):
    install(site, "tutor-hijack", "hijack", "tutor_hijack", """
        import click
        from tutor import hookimpl

        @hookimpl
        def register_commands(cli):
            @cli.command()
            def subjects():
                click.echo("hijacked")
    """)
    result = tutor(site, "subjects", TUTOR_LOAD_PLUGINS="hijack")
    assert "hijacked" not in result.stdout and result.stdout.startswith("subject")
    assert "warning: plugin 'hijack' tried to replace the command 'subjects'; kept the original" in result.stderr


def test_plugins_are_loaded_once_and_lazily():
    code = (
        "import tutor, tutor.plugins as p\n"
        "assert p.plugin_manager.cache_info().currsize == 0, 'loaded at import'\n"
        "p.plugin_manager(); p.plugin_manager()\n"
        "print(p.plugin_manager.cache_info().misses)"
    )
    assert subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.strip() == "1"


def test_a_plugin_whose_hook_raises_is_skipped_for_that_hook(site):
    install(site, "tutor-halfbroken", "halfbroken", "tutor_halfbroken", """
        from pathlib import Path
        from tutor import Subject, hookimpl, read_question_types

        @hookimpl
        def register_subjects(register):
            register(Subject(name="half", title="Half", syllabus="none", topics=["t"]))

        @hookimpl
        def register_question_types(register):
            for qtype in read_question_types(Path(__file__).parent / "missing-types.toml", "half"):
                register(qtype)
    """)
    result = tutor(site, "subjects", TUTOR_LOAD_PLUGINS="halfbroken,dupe-a")
    assert result.returncode == 0
    assert "warning: plugin 'halfbroken' failed in register_question_types and was skipped there:" in result.stderr
    assert "missing-types.toml: [Errno 2] No such file or directory" in result.stderr
    assert "half" in result.stdout and "dupe" in result.stdout


# --- hooks through pluggy, in a fixed order -------------------------------------------------------


def _source(name):
    from tutor import QuestionSource

    return QuestionSource(name=name, description=f"the {name} source", fetch=lambda location, **options: iter(()))


def test_hooks_go_through_pluggy_core_first_and_tryfirst_trylast_and_wrappers_honoured(toy):
    """Calling implementations one by one (as the registry once did) ran tryfirst last and never ran a wrapper."""
    from tutor import hookimpl
    from tutor.plugins import plugin_manager
    from tutor.registry import registry

    seen = []

    class First:
        @hookimpl(tryfirst=True)
        def register_sources(register):
            register(_source("first"))

    class Plain:
        @hookimpl
        def register_sources(register):
            register(_source("plain"))

    class Last:
        @hookimpl(trylast=True)
        def register_sources(register):
            register(_source("last"))

    class Wrapper:
        @hookimpl(wrapper=True)
        def register_sources(register):
            seen.append("before")
            yield
            seen.append("after")

    pm = plugin_manager()
    for plugin in (Last, First, Wrapper, Plain):  # registration order must not matter
        pm.register(plugin, name=plugin.__name__)
    registry.cache_clear()
    try:
        assert list(registry().sources) == ["first", "csv", "jsonl", "site", "plain", "last"]
        assert registry().owner["question source", "first"] == "First"
        assert seen == ["before", "after"]
    finally:
        for plugin in (Last, First, Wrapper, Plain):
            pm.unregister(name=plugin.__name__)
        registry.cache_clear()


def test_an_implementation_that_raises_loses_what_it_registered_and_the_next_one_runs(toy):
    from tutor import hookimpl
    from tutor.plugins import PluginWarning, plugin_manager
    from tutor.registry import registry

    class Broken:
        @hookimpl
        def register_sources(register):
            register(_source("half"))
            raise RuntimeError("no such site")

    class Fine:
        @hookimpl
        def register_sources(register):
            register(_source("fine"))

    pm = plugin_manager()
    pm.register(Fine, name="fine")
    pm.register(Broken, name="broken")  # called before Fine: the newest first
    registry.cache_clear()
    try:
        with pytest.warns(PluginWarning, match="plugin 'broken' failed in register_sources and was skipped there:\n  RuntimeError: no"):
            sources = list(registry().sources)
        assert "fine" in sources and "half" not in sources
    finally:
        pm.unregister(name="fine")
        pm.unregister(name="broken")
        registry.cache_clear()


def test_installed_plugins_are_called_in_entry_point_name_order(site):
    for name in ("zeta", "alpha", "mid"):
        install(site, f"tutor-{name}", name, f"tutor_{name}", f"""
            from tutor import hookimpl

            @hookimpl
            def register_sources(register):
                from tutor import QuestionSource
                register(QuestionSource(name="{name}", description="d", fetch=lambda location, **options: iter(())))
        """)
    code = "from tutor.registry import registry; print(list(registry().sources))"
    environ = os.environ | {"PYTHONPATH": str(site), "TUTOR_LOAD_PLUGINS": "zeta,alpha,mid"}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environ, check=True).stdout
    assert out == str(["csv", "jsonl", "site", "alpha", "mid", "zeta"]) + "\n"


# --- a subject by convention ----------------------------------------------------------------------


def install_package(site, dist, entry, package, files):
    """A subject package as pip leaves it: a folder with an empty __init__.py and data files, and its entry point."""
    (site / package).mkdir()
    for name, text in {"__init__.py": "", **files}.items():
        (site / package / name).write_text(textwrap.dedent(text))
    info = site / f"{dist.replace('-', '_')}-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {dist}\nVersion: 0.1\n")
    (info / "entry_points.txt").write_text(f"[tutor]\n{entry} = {package}\n")


BIOLOGY_SUBJECT = """
    title = "Biology"
    syllabus = "Cambridge International AS & A Level Biology (9700)"
    topics = ["cells", "transport", "genetics"]

    [levels]
    AS = "Cambridge International AS Level Biology (9700)"
    "A Level" = "Cambridge International A Level Biology (9700)"
"""

# A Cambridge 9700 Paper 4 essay: 15 marks, (a) and (b), each marked by points up to its own maximum.
BIOLOGY_TYPES = '''
    [[types]]
    id = "alevel-essay"
    name = "A Level 15-mark essay"
    level = "A Level"
    format = "essay"
    marks = 15
    marking = "points-with-caps"
    caps = [7, 8]
    guide = """Answer (a) and (b) separately. Each is marked by points up to its own maximum (max 7, max 8): make one
    precise, creditable point per mark, in the order of the process, using the syllabus terms."""

    [[types.exemplars]]
    question = "(a) Describe the structure of a chloroplast. [7] (b) Explain how light energy is used to make ATP. [8]"
    answer = "(a) A chloroplast is surrounded by a double membrane (envelope) ... (b) Light is absorbed by photosystems ..."
'''


def biology_essay(**changes):
    points = [{"part": "a", "text": f"structure point {n}"} for n in range(9)]
    points += [{"part": "b", "text": f"ATP point {n}"} for n in range(10)]
    question = {"subject": "biology", "type": "alevel-essay", "topic": "cells", "marks": 15, "source": {"name": "test"},
                "stem": "Chloroplasts and photosynthesis.",
                "parts": [{"label": "a", "text": "Describe the structure of a chloroplast.", "marks": 7},
                          {"label": "b", "text": "Explain how light energy is used to make ATP.", "marks": 8}],
                "mark_scheme": {"points": points, "notes": "(a) max 7; (b) max 8."}}
    return json.dumps({**question, **changes}) + "\n"


def test_a_subject_package_needs_no_code_only_its_files_and_an_entry_point(site):
    install_package(site, "tutor-biology", "biology", "tutor_biology", {"subject.toml": BIOLOGY_SUBJECT, "types.toml": BIOLOGY_TYPES})
    result = tutor(site, "--subject", "biology", "types", TUTOR_LOAD_PLUGINS="biology")
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[2].split()[:7] == ["alevel-essay", "A", "Level", "15-mark", "essay", "A", "Level"]
    plugins = {p["name"]: p for p in json.loads(tutor(site, "plugins", TUTOR_LOAD_PLUGINS="biology").stdout)}
    assert plugins["biology"] == {"name": "biology", "distribution": "tutor-biology", "version": "0.1",
                                  "hooks": ["register_question_types", "register_subjects"]}  # no formats.toml, no templates/


def test_a_points_with_caps_essay_type_validates(subject_package, tmp_path):
    """Cambridge 9700's 15-mark essays (max 7 + max 8), which the old rule (an essay of 12 marks or more needs levels) refused."""
    from click.testing import CliRunner
    from tutor.cli import cli

    subject_package("biology", {"subject.toml": BIOLOGY_SUBJECT, "types.toml": BIOLOGY_TYPES})
    bank = tmp_path / "bank.jsonl"

    def validate(*lines):
        bank.write_text("".join(lines))
        return CliRunner().invoke(cli, ["--subject", "biology", "bank", "validate", str(bank)])

    result = validate(biology_essay())
    assert result.exit_code == 0, result.output
    parts = [{"label": "a", "text": "Describe.", "marks": 8}, {"label": "b", "text": "Explain.", "marks": 7}]
    swapped = validate(biology_essay(parts=parts)).output
    assert "parts: type alevel-essay caps its sections at [7, 8] marks; the parts have [8, 7]" in swapped
    unparted = biology_essay(parts=[], mark_scheme={"points": [{"text": "p", "marks": 15}]})
    assert "parts: type alevel-essay is marked by points with a cap per section" in validate(unparted).output
    levels = {"levels": [{"level": 1, "marks": [1, 7], "descriptor": "d", "part": "a"},
                         {"level": 1, "marks": [1, 8], "descriptor": "d", "part": "b"}]}
    assert "is marked by points-with-caps, not by levels" in validate(biology_essay(mark_scheme=levels)).output


def test_a_type_at_a_level_the_subject_does_not_declare_fails_its_plugin(subject_package):
    from click.testing import CliRunner
    from tutor.cli import cli

    types = BIOLOGY_TYPES.replace('level = "A Level"', 'level = "A2"')
    package = subject_package("biology", {"subject.toml": BIOLOGY_SUBJECT, "types.toml": types})
    result = CliRunner().invoke(cli, ["--subject", "biology", "types"])
    assert result.exit_code == 1
    level = "level 'A2' is not one of biology's levels; valid: AS, A Level"
    assert f"{package / 'types.toml'}:2: types[0] (alevel-essay).level: {level}" in result.output


def test_a_type_registered_in_code_is_checked_against_the_subjects_levels(toy):
    from tutor import QuestionType, hookimpl
    from tutor.errors import PluginFailed
    from tutor.plugins import PluginWarning, plugin_manager
    from tutor.registry import get_subject, registry

    short = toy.types["short"].model_dump()

    class ExtraType:
        @hookimpl
        def register_question_types(register):
            register(QuestionType.model_validate({**short, "id": "gcse-short", "level": "GCSE"}))

    plugin_manager().register(ExtraType, name="extra-type")
    registry.cache_clear()
    try:
        with pytest.warns(PluginWarning, match="type 'gcse-short': level 'GCSE' is not one of toy's levels; valid: A-Level"):
            assert "gcse-short" not in registry().types["toy"]
        get_subject("toy")  # the toy's own plugin is fine; the failure is extra-type's
        with pytest.raises(PluginFailed):
            raise PluginFailed("toy", [f for f in registry().failures if f.plugin == "extra-type"])
    finally:
        plugin_manager().unregister(name="extra-type")
        registry.cache_clear()


@pytest.fixture
def fresh_cli(monkeypatch):
    """The `tutor` group as at start-up: the core's commands only, plugin commands not yet added."""
    from tutor.cli import TutorGroup, cli

    monkeypatch.setattr(TutorGroup, "_plugin_commands_added", False)
    core = {name: command for name, command in cli.commands.items() if command.callback.__module__.startswith("tutor.cli")}
    monkeypatch.setattr(cli, "commands", core)
    return cli


def test_plugin_commands_are_added_through_pluggy_and_a_broken_plugins_are_taken_out(toy, fresh_cli):
    import click
    from click.testing import CliRunner
    from tutor import hookimpl
    from tutor.plugins import plugin_manager

    class Hello:
        @hookimpl
        def register_commands(cli):
            @cli.command()
            def hello():
                "Say hello."
                click.echo("hello")

    class HalfBroken:
        @hookimpl
        def register_commands(cli):
            cli.add_command(click.Command("half", callback=lambda: None))
            cli.add_command(click.Command("types", callback=lambda: None))  # a core command: kept
            raise RuntimeError("missing template")

    for plugin in (Hello, HalfBroken):
        plugin_manager().register(plugin, name=plugin.__name__)
    try:
        result = CliRunner().invoke(fresh_cli, ["hello"])  # the CLI shows warnings as lines on stderr
        assert result.stdout == "hello\n"
        assert "half" not in fresh_cli.commands and fresh_cli.commands["types"].callback.__module__ == "tutor.cli.info"
        assert result.stderr == ("warning: plugin 'HalfBroken' tried to replace the command 'types'; kept the original\n"
                                 "warning: plugin 'HalfBroken' failed in register_commands and was skipped there:\n"
                                 "  RuntimeError: missing template\n")
    finally:
        for plugin in (Hello, HalfBroken):
            plugin_manager().unregister(name=plugin.__name__)
