"""Plugin discovery through real entry points, in a subprocess, as `tutor` runs for a user.

Each fake plugin is a module plus a .dist-info folder on PYTHONPATH: exactly
what pip leaves behind, so importlib.metadata finds it the same way.
"""

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
    assert result.returncode == 0 and result.stderr == "warning: plugin 'broken' from tutor-broken was skipped: RuntimeError: missing data file\n"


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
    assert "hello     Say hello." in tutor(site, "--help", TUTOR_LOAD_PLUGINS="hello").stdout


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
