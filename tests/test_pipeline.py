"""`tutor run`: the pipeline as one command that re-runs only what changed, resumes after kill -9, and locks its workspace.

Training, eval and export run for real on the tiny random Llama (tests/tiny_model.py) in seconds; the bank is a
copy of the physics sample bank in the workspace, so a test can edit a gold answer as a user would.
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

pytest.importorskip("trl")

from cli_runner import invoke  # noqa: E402
from tutor import pipeline as pl  # noqa: E402
from tutor.errors import TutorError  # noqa: E402
from tutor.registry import get_subject  # noqa: E402
from tutor.workspace import Workspace  # noqa: E402

pytestmark = pytest.mark.usefixtures("clean_teacher_env")

SAMPLE = Path(get_subject("physics").subject.bank)
DOWNSTREAM = ["kb", "dataset", "train", "eval", "export"]  # of a gold answer


def config(model: Path, *, max_steps: int = 3, extra: str = "") -> str:
    return (f'[model]\nbase = "{model}"\n\n[train]\nmax_length = 384\nlearning_rate = 0.005\nbatch_size = 2\nmax_steps = {max_steps}\n'
            f'save_steps = 2\n\n[eval]\nlimit = 2\nmax_new_tokens = 8\n\n[export]\nformats = ["peft"]\n{extra}')


def make_workspace(root: Path, model: Path, **options) -> Path:
    """A workspace that trains the tiny model on its own copy of the physics sample bank."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "tutor.toml").write_text(config(model, **options), encoding="utf-8")
    shutil.copytree(SAMPLE, root / "physics" / "bank", ignore=shutil.ignore_patterns("*.py", "__pycache__"))
    return root


def statuses(out: str, subject: str = "physics") -> dict[str, str]:
    """stage -> status, from the summary table `tutor run` prints for a subject."""
    lines = out.replace(f"\n{subject} (plan)\n", f"\n{subject}\n").split(f"\n{subject}\n")[-1].splitlines()
    found = {}
    for line in lines:
        parts = line.split()
        if parts and parts[0] in pl.STAGE_NAMES and parts[0] not in found:
            rest = line[len(parts[0]):].strip()
            found[parts[0]] = next(s for s in ("up to date", "not available", "not selected", "ran", "run", "skipped", "failed",
                                                "blocked", "interrupted") if rest.startswith(s))
    return found


@pytest.fixture(scope="module")
def done(tiny_model, tmp_path_factory):
    """A workspace the whole pipeline has run on once, and what that run printed."""
    root = make_workspace(tmp_path_factory.mktemp("run") / "ws", tiny_model)
    code, out = invoke("--subject", "physics", "run", workspace=root)
    assert code == 0, out
    return root, out


@pytest.fixture
def copy_of_done(done, tmp_path):
    """A private copy of the finished workspace: run.json keeps paths relative to the workspace, so the copy is whole."""
    target = tmp_path / "ws"
    shutil.copytree(done[0], target)
    return target


def test_the_first_run_does_every_stage_and_ends_with_base_vs_tuned_and_the_headline(done):
    root, out = done
    assert statuses(out) == {"collect": "skipped", "teach": "skipped", "diagrams": "ran", "kb": "ran", "dataset": "ran", "train": "ran",
                             "eval": "ran", "export": "ran"}
    assert "no sources: add [collect.physics] imports or sites to tutor.toml" in out
    assert "no teacher configured ([teacher] in tutor.toml): the bank's own gold answers are used" in out
    assert "compiled: 27/27 (100%)" in out  # the diagrams stage's key figure
    record = json.loads((root / "physics" / "run.json").read_text())["stages"]
    assert {name: entry["status"] for name, entry in record.items()} == {s: "done" for s in ("diagrams", *DOWNSTREAM)}
    adapter = root / record["train"]["outputs"]["answer"]
    assert (adapter / "tutor-adapter.json").is_file() and not Path(record["train"]["outputs"]["answer"]).is_absolute()
    assert (root / record["export"]["outputs"]["folder"] / "peft" / "adapter_model.safetensors").is_file()
    # The end: one held-out question from base and tuned, the eval's headline, and how to serve.
    tail = out.split("held-out question", 1)[1]
    assert "never trained on" in tail and "\nbase model (base):\n" in tail and f"\ntuned adapter ({adapter.name}):\n" in tail
    assert "\neval: " in tail and "tutor --workspace" in tail and " serve" in tail
    summary = (root / "run-summary.md").read_text()
    assert "## physics (ok)" in summary and "| train | ran |" in summary and "train loss" in summary


def test_a_second_run_right_after_does_nothing_and_says_why(copy_of_done):
    before = json.loads((copy_of_done / "physics" / "run.json").read_text())
    adapters = sorted((copy_of_done / "physics" / "adapters" / "answer").iterdir())
    code, out = invoke("--subject", "physics", "run", workspace=copy_of_done)
    assert code == 0, out
    assert statuses(out) == {"collect": "skipped", "teach": "skipped", **{s: "up to date" for s in ("diagrams", *DOWNSTREAM)}}
    assert "train: up to date: inputs unchanged since" in out
    assert "physics: nothing to do: every stage is up to date or has nothing to do" in out
    assert sorted((copy_of_done / "physics" / "adapters" / "answer").iterdir()) == adapters  # nothing trained
    assert json.loads((copy_of_done / "physics" / "run.json").read_text()) == before


def test_editing_one_gold_answer_re_runs_exactly_the_stages_downstream_of_it(copy_of_done):
    answers = copy_of_done / "physics" / "bank" / "answers.jsonl"
    lines = answers.read_text(encoding="utf-8").splitlines()
    edited = next(i for i, line in enumerate(lines) if "DIAGRAM" not in line)  # its text, not a diagram marker
    row = json.loads(lines[edited])
    row["text"] += " (The unit is given to the correct number of significant figures.)"
    lines[edited] = json.dumps(row, ensure_ascii=False)
    answers.write_text("\n".join(lines) + "\n", encoding="utf-8")
    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=copy_of_done)  # its id no longer matches its text
    assert statuses(plan)["diagrams"] == "failed" and f"{answers}:{edited + 1}: id " in plan and "tutor bank ids --write" in plan
    code, out = invoke("--subject", "physics", "bank", "ids", str(answers.parent), "--write", workspace=copy_of_done)
    assert code == 0, out

    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=copy_of_done)
    assert code == 0, plan
    assert statuses(plan) == {"collect": "skipped", "teach": "skipped", "diagrams": "up to date", **{s: "run" for s in DOWNSTREAM}}
    assert "inputs changed: bank answers.jsonl" in plan and "dataset runs first" in plan and "Nothing was run" in plan
    code, out = invoke("--subject", "physics", "run", workspace=copy_of_done)
    assert code == 0, out
    assert statuses(out) == {"collect": "skipped", "teach": "skipped", "diagrams": "up to date", **{s: "ran" for s in DOWNSTREAM}}
    assert "train: running (inputs changed: datasets)" in out


def test_a_config_change_is_the_next_runs_and_only_reruns_what_it_touches(copy_of_done):
    toml = copy_of_done / "tutor.toml"
    toml.write_text(toml.read_text().replace('formats = ["peft"]', 'formats = ["peft", "merged"]'), encoding="utf-8")
    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=copy_of_done)
    unchanged = {s: "up to date" for s in ("diagrams", "kb", "dataset", "train", "eval")}
    assert statuses(plan) == {"collect": "skipped", "teach": "skipped", **unchanged, "export": "run"}
    assert "inputs changed: export config" in plan


def test_eval_rag_in_the_config_adds_the_adapter_with_the_knowledge_base_paired(copy_of_done):
    """[eval] rag = true: the eval stage (and only what reads it) re-runs, with the adapter and the adapter +rag on the same items."""
    toml = copy_of_done / "tutor.toml"
    toml.write_text(toml.read_text().replace("[eval]\n", "[eval]\nrag = true\n"), encoding="utf-8")
    code, out = invoke("--subject", "physics", "run", workspace=copy_of_done)
    assert code == 0, out
    unchanged = {s: "up to date" for s in ("diagrams", "kb", "dataset", "train")}
    assert statuses(out) == {"collect": "skipped", "teach": "skipped", **unchanged, "eval": "ran", "export": "ran"}
    record = json.loads((copy_of_done / "physics" / "run.json").read_text())["stages"]
    summary = json.loads((copy_of_done / record["eval"]["outputs"]["run"] / "summary.json").read_text())
    labels = [m["label"] for m in summary["models"]]
    assert labels[0] == "base" and labels[2] == f"{labels[1]} +rag"
    assert summary["rag"][0].startswith(f"mark-points: {labels[1]} without -> with the knowledge base ")  # paired with itself
    assert f"eval: {summary['rag'][0]}" in out and summary["headline"].startswith(f"mark-points: base -> {labels[1]} ")



def test_a_config_edit_made_during_a_run_is_not_half_applied(copy_of_done, monkeypatch):
    """tutor.toml is read once per run: the dataset stage edits it mid-run, and train still trains with the old settings."""
    from tutor import dataset as ds

    toml = copy_of_done / "tutor.toml"
    original = ds.build_roles

    def editing(*args, **kwargs):
        toml.write_text(toml.read_text().replace("max_steps = 3", "max_steps = 5"), encoding="utf-8")
        return original(*args, **kwargs)

    monkeypatch.setattr(ds, "build_roles", editing)
    code, out = invoke("--subject", "physics", "run", "--force", "dataset", workspace=copy_of_done)
    assert code == 0, out
    record = json.loads((copy_of_done / "physics" / "run.json").read_text())["stages"]
    adapter = copy_of_done / record["train"]["outputs"]["answer"]
    assert json.loads((adapter / "tutor-adapter.json").read_text())["metrics"]["steps"] == 3  # the settings the run started with
    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=copy_of_done)
    assert statuses(plan)["train"] == "run" and "inputs changed: settings" in plan  # ...and the next run takes the edit


def test_a_lost_output_is_rebuilt(copy_of_done):
    shutil.rmtree(copy_of_done / "exports" / "physics")
    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=copy_of_done)
    assert statuses(plan)["export"] == "run" and f"its output is gone: {copy_of_done / 'exports' / 'physics'}" in plan


def test_kill_9_during_train_then_tutor_run_finishes_from_the_checkpoint(tiny_model, tmp_path):
    root = make_workspace(tmp_path / "ws", tiny_model, max_steps=60)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "tutor.cli", "--workspace", str(root), "--subject", "physics", "run"],
                               env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    adapters = root / "physics" / "adapters" / "answer"
    deadline = time.monotonic() + 300
    while not list(adapters.glob("*/checkpoints/checkpoint-*")):  # a checkpoint in: killed mid-training
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be killed"
        time.sleep(0.2)
    os.kill(process.pid, signal.SIGKILL)
    process.wait()
    record = json.loads((root / "physics" / "run.json").read_text())["stages"]
    assert record["train"]["status"] == "running"
    (run,) = adapters.iterdir()

    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=root)
    assert statuses(plan)["train"] == "run" and "interrupted last time: resumes" in plan
    code, out = invoke("--subject", "physics", "run", workspace=root)
    assert code == 0, out
    assert f"took over {root / '.run.lock'} from pid {process.pid}, which is no longer running" in out
    assert f"the interrupted run {run.name} continues from its last checkpoint" in out
    resumed = {s: "ran" for s in ("train", "eval", "export")}
    unchanged = {s: "up to date" for s in ("diagrams", "kb", "dataset")}
    assert statuses(out) == {"collect": "skipped", "teach": "skipped", **unchanged, **resumed}
    assert [p.name for p in adapters.iterdir()] == [run.name]  # the same run, finished
    meta = json.loads((run / "tutor-adapter.json").read_text())
    assert meta["metrics"]["steps"] == 60
    steps = [json.loads(line)["step"] for line in (run / "log.jsonl").read_text().splitlines() if '"loss"' in line]
    assert steps[-1] == 60 and sorted(set(steps)) == list(range(1, 61))  # every step, those after the checkpoint logged again


def test_ctrl_c_during_train_says_so_and_leaves_the_stage_to_resume(tiny_model, tmp_path):
    from cli_runner import hears_ctrl_c

    root = make_workspace(tmp_path / "ws", tiny_model, max_steps=60)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    process = subprocess.Popen([sys.executable, "-m", "tutor.cli", "--workspace", str(root), "--subject", "physics", "run"],
                               env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, preexec_fn=hears_ctrl_c)
    deadline = time.monotonic() + 300
    while not list((root / "physics" / "adapters" / "answer").glob("*/checkpoints/checkpoint-*")):
        assert process.poll() is None and time.monotonic() < deadline, "the run ended before it could be interrupted"
        time.sleep(0.2)
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130, out
    assert "error: interrupted during physics train; everything done is saved: `tutor run` resumes\n" in out  # (a bar may follow)
    assert json.loads((root / "physics" / "run.json").read_text())["stages"]["train"]["status"] == "running"
    assert "| train | interrupted |" in (root / "run-summary.md").read_text()


def test_a_second_tutor_run_on_the_workspace_is_refused_naming_the_holder(tmp_path):
    root = tmp_path / "ws"
    root.mkdir()
    hold = ("import sys, time\nfrom pathlib import Path\nfrom tutor.pipeline import run_lock\nfrom tutor.workspace import Workspace\n"
            "with run_lock(Workspace(Path(sys.argv[1])), print):\n    print('held', flush=True)\n    time.sleep(60)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)}
    holder = subprocess.Popen([sys.executable, "-c", hold, str(root)], stdout=subprocess.PIPE, text=True, env=env)
    try:
        assert holder.stdout.readline().strip() == "held"
        code, out = invoke("--subject", "physics", "run", "--until", "collect", workspace=root)
        assert code == 1
        assert out.strip().splitlines()[-1] == (f"error: another `tutor run` (pid {holder.pid}) is working on {root} "
                                                f"({root / '.run.lock'} is locked): wait for it to finish, or stop it")
        code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=root)  # a plan only reads: no lock needed
        assert code == 0, plan
    finally:
        holder.kill()
        holder.wait()
    code, out = invoke("--subject", "physics", "run", "--until", "collect", workspace=root)
    assert code == 0 and "from pid" in out and "no longer running" in out  # the dead holder's lock is taken over


def test_a_misconfigured_stage_fails_with_one_line_and_nothing_after_it_starts(tmp_path, tiny_model):
    root = make_workspace(tmp_path / "ws", tiny_model, extra='\n[teacher]\npreset = "deepseek-chat"\napi_key_env = "NO_SUCH_TUTOR_KEY"\n')
    code, plan = invoke("--subject", "physics", "run", "--dry-run", workspace=root)  # the plan shows it too
    assert statuses(plan)["teach"] == "failed" and statuses(plan)["dataset"] == "blocked" and "export NO_SUCH_TUTOR_KEY=..." in plan
    code, out = invoke("--subject", "physics", "run", workspace=root)
    assert code == 1
    assert statuses(out) == {"collect": "skipped", "teach": "failed", **{s: "blocked" for s in ("diagrams", *DOWNSTREAM)}}
    assert "teach: misconfigured: the teacher's API key is not set: export NO_SUCH_TUTOR_KEY=..." in out
    assert out.strip().splitlines()[-1].startswith("physics: failed: teach: the teacher's API key is not set")
    assert not (root / "physics" / "datasets").exists() and not (root / "physics" / "adapters").exists()

    toml = root / "tutor.toml"
    toml.write_text(config(tiny_model) + '\n[collect.physics]\nimports = [{ file = "x.csv", source = "nope" }]\n', encoding="utf-8")
    (root / "x.csv").write_text("stem\nWhat is a newton?\n", encoding="utf-8")
    code, out = invoke("--subject", "physics", "run", workspace=root)
    assert code == 1 and statuses(out)["collect"] == "failed" and statuses(out)["train"] == "blocked"
    assert "collect: misconfigured: unknown question source 'nope'; valid: " in out


def test_collect_imports_the_configured_export_once_and_again_when_it_changes(tmp_path, tiny_model):
    root = tmp_path / "ws"
    root.mkdir()
    export = root / "incoming.jsonl"
    export.write_text("".join((SAMPLE / "questions.jsonl").read_text().splitlines(keepends=True)[:5]), encoding="utf-8")
    (root / "tutor.toml").write_text(config(tiny_model) + '\n[collect.physics]\nimports = [{ file = "incoming.jsonl" }]\n')
    code, out = invoke("--subject", "physics", "run", "--until", "collect", workspace=root)
    assert code == 0, out
    assert statuses(out)["collect"] == "ran" and "read: 5; imported: 5" in out
    assert len((root / "physics" / "bank" / "questions.jsonl").read_text().splitlines()) == 5
    code, out = invoke("--subject", "physics", "run", "--until", "collect", workspace=root)
    assert statuses(out)["collect"] == "up to date"
    export.write_text(export.read_text() + (SAMPLE / "questions.jsonl").read_text().splitlines(keepends=True)[5])
    code, out = invoke("--subject", "physics", "run", "--until", "collect", workspace=root)
    assert statuses(out)["collect"] == "ran" and "inputs changed: files" in out and "imported: 1; duplicate: 5" in out


def test_the_teacher_answers_the_collected_questions_once(tmp_path, tiny_model, teacher_server, monkeypatch):
    """collect -> teach -> diagrams with the real openai client against a teacher on 127.0.0.1; the second run sends nothing."""
    for name, value in {"TUTOR_TEACHER_PRESET": "local", "TUTOR_TEACHER_MODEL": "teacher-test",
                        "TUTOR_TEACHER_BASE_URL": teacher_server.base_url, "TUTOR_TEACHER_BACKOFF": "0.05"}.items():
        monkeypatch.setenv(name, value)
    root = tmp_path / "ws"
    root.mkdir()
    lines = (SAMPLE / "questions.jsonl").read_text().splitlines(keepends=True)
    planning = next(line for line in lines if json.loads(line)["type"] == "alevel-planning")  # its answers need a diagram
    (root / "incoming.jsonl").write_text("".join([*lines[:3], planning]))
    (root / "tutor.toml").write_text(config(tiny_model) + '\n[collect.physics]\nimports = [{ file = "incoming.jsonl" }]\n')
    code, out = invoke("--subject", "physics", "run", "--until", "diagrams", workspace=root)
    assert code == 0, out
    assert statuses(out) == {"collect": "ran", "teach": "ran", "diagrams": "ran", **{s: "not selected" for s in DOWNSTREAM}}
    assert "answered: 4" in out and "requests: 1; taught: 1" in out and "compiled: 1/1 (100%)" in out
    sent = len(teacher_server.requests)
    code, out = invoke("--subject", "physics", "run", "--until", "diagrams", workspace=root)
    assert statuses(out)["teach"] == "up to date" and len(teacher_server.requests) == sent


def test_all_runs_every_installed_subject_and_a_failing_one_does_not_stop_the_others(tmp_path, tiny_model):
    root = tmp_path / "ws"
    root.mkdir()
    (root / "tutor.toml").write_text(config(tiny_model) + '\n[collect.economics]\nsites = ["missing-site.toml"]\n')
    code, plan = invoke("run", "--all", "--dry-run", workspace=root)
    assert code == 0, plan
    for subject in ("chemistry", "economics", "geography", "physics"):
        assert f"\n{subject} (plan)\n" in plan
    code, out = invoke("run", "--all", "--until", "dataset", workspace=root)
    assert code == 1
    assert statuses(out, "economics")["collect"] == "failed" and statuses(out, "economics")["dataset"] == "blocked"
    assert "[economics] collect: misconfigured: [collect.economics] sites: missing-site.toml: no such file" in out
    for subject in ("chemistry", "geography", "physics"):
        assert statuses(out, subject)["dataset"] == "ran", out
        assert (root / subject / "datasets" / "answer" / "tutor-dataset.json").is_file()
    assert out.strip().splitlines()[-1].startswith("economics: failed: collect: [collect.economics] sites: missing-site.toml")
    assert "## economics (failed: collect:" in (root / "run-summary.md").read_text()


def test_from_until_and_force_choose_the_stages(copy_of_done):
    code, plan = invoke("--subject", "physics", "run", "--dry-run", "--from", "train", "--until", "eval", "--force", "train",
                        workspace=copy_of_done)
    before = {s: "not selected" for s in ("collect", "teach", "diagrams", "kb", "dataset")}
    assert statuses(plan) == {**before, "train": "run", "eval": "run", "export": "not selected"}
    assert "forced (--force)" in plan and "train runs first" in plan
    code, out = invoke("--subject", "physics", "run", "--from", "eval", "--until", "train", workspace=copy_of_done)
    assert code == 1 and "error: --from eval comes after --until train: nothing to run" in out
    code, out = invoke("run", workspace=copy_of_done)
    assert code == 2 and "error: unknown subject '(none given: use --subject)'; valid: chemistry, economics, geography, physics" in out


def test_a_stage_whose_packages_are_missing_is_not_available():
    stage = pl.Stage("eval", "", lambda ctx: {}, lambda ctx: pl.Done(), needs=("no_such_module_here",), extra="eval")
    assert pl.available(stage) == "not installed: no_such_module_here (pip install 'tutor[eval]')"
    assert pl.available(pl.STAGES[0]) is None


def test_decide_names_what_changed_and_a_corrupt_record_is_decided_afresh(tmp_path):
    ws = Workspace(tmp_path)
    said = []
    (tmp_path / "physics").mkdir()
    ws.run_record("physics").write_text("{not json")
    assert pl.read_record(ws, "physics", said.append) == {"subject": "physics", "stages": {}}
    assert "is unreadable" in said[0] and "every stage is decided afresh" in said[0]
    assert pl.changes({"a": 1, "b": 2, "c": 3}, {"a": 1, "b": 5, "d": 4}) == ["b", "c", "d"]
    with pytest.raises(TutorError, match="--from export comes after --until dataset"):
        pl.selected("export", "dataset")
