"""A pytest plugin (`-p hook_recorder`) that records which tutor hooks each test really calls.

For test_hooks_documented: a hook counts as tested only if the test named for
it makes pluggy call at least one implementation of it. Each test starts from
an unbuilt registry and a command line without plugin commands, so a hook an
earlier test already called is called again if this test needs it. Writes
{test: [hook, ...]} as JSON to $TUTOR_HOOKS_CALLED when the session ends.
"""

import json
import os

import pytest

CALLED: dict[str, set[str]] = {}


@pytest.hookimpl(wrapper=True)
def pytest_runtest_protocol(item, nextitem):
    from tutor.cli import TutorGroup, cli
    from tutor.plugins import plugin_manager
    from tutor.registry import registry

    registry.cache_clear()
    TutorGroup._plugin_commands_added = False
    cli.commands = {name: command for name, command in cli.commands.items() if command.callback.__module__.startswith("tutor.cli")}
    called = CALLED.setdefault(item.nodeid.split("[")[0], set())  # all parameters of a test count as one test

    def before(hook_name, hook_impls, kwargs):
        if any(not (impl.wrapper or impl.hookwrapper) for impl in hook_impls):
            called.add(hook_name)

    undo = plugin_manager().add_hookcall_monitoring(before, lambda outcome, hook_name, hook_impls, kwargs: None)
    try:
        return (yield)
    finally:
        undo()


def pytest_sessionfinish(session):
    with open(os.environ["TUTOR_HOOKS_CALLED"], "w", encoding="utf-8") as handle:
        json.dump({test: sorted(hooks) for test, hooks in CALLED.items()}, handle)
