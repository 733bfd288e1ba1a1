"""MCQ log-likelihoods through lm-evaluation-harness, checked against its own command line and its MMLU task; the answer loss.

The model is the tiny random Llama of tiny_model.py: its numbers mean nothing, so
they are compared exactly, not judged.
"""

import glob
import json
import os
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest
from tutor.eval.loglik import DESCRIPTION, DOC_TO_TEXT, answer_loss, mcq_logliks, mmlu_doc
from tutor.models import Question

MMLU_TEMPLATE = Path(find_spec("lm_eval").submodule_search_locations[0]) / "tasks" / "mmlu" / "default" / "_default_template_yaml"


def mcq(stem: str, options: list[str], key: str, parts: list[dict] = ()) -> Question:
    marks = sum(p["marks"] for p in parts) or 1
    points = [{"text": key, "part": p["label"], "marks": p["marks"]} for p in parts] or [{"text": key}]
    return Question(subject="toy", type="mcq", topic="foundations", stem=stem, parts=list(parts), options=dict(zip("ABCDE", options)),
                    key=key, marks=marks, mark_scheme={"points": points}, source={"name": "test"})


QUESTIONS = [
    mcq("What is the SI unit of force?", ["newton", "joule", "watt", "pascal"], "A"),
    mcq("Which quantity is a vector?", ["mass", "speed", "velocity", "energy"], "C"),
    mcq("What is 12 + 30?", ["40", "41", "42", "43"], "C"),
    mcq("  A ball is dropped from rest. Which graph shows its speed against time?  ",
        ["a horizontal line", "a straight line through the origin", "a parabola", "a hyperbola"], "B"),
    mcq("Which particle has a negative charge?", ["proton", "neutron", "electron", "alpha particle"], "C"),
    mcq("What is 7 × 8?", ["54", "56", "58", "64"], "B"),
]
SHOTS = [mcq("What is the SI unit of energy?", ["watt", "joule", "newton", "volt"], "B"),
         mcq("What is 2 + 2?", ["3", "4", "5", "6"], "B")]


def render(template: str, doc: dict) -> str:
    from lm_eval.utils import apply_template  # how lm_eval renders every doc_to_text

    return apply_template(template, doc)


def test_the_prompt_of_a_four_option_item_is_lm_evals_mmlu_template():
    import yaml

    mmlu = yaml.safe_load(MMLU_TEMPLATE.read_text())
    doc = mmlu_doc(QUESTIONS[3])
    expected = ("A ball is dropped from rest. Which graph shows its speed against time?\nA. a horizontal line\n"
                "B. a straight line through the origin\nC. a parabola\nD. a hyperbola\nAnswer:")
    assert render(mmlu["doc_to_text"], doc) == expected
    assert render(DOC_TO_TEXT, doc) == expected
    assert mmlu["doc_to_choice"] == doc["letters"] == ["A", "B", "C", "D"] and doc["answer"] == 1


@pytest.mark.parametrize(("question", "expected"), [
    (mcq("Pick one.", ["x", "y", "z"], "C"), "Pick one.\nA. x\nB. y\nC. z\nAnswer:"),
    (mcq("Pick one.", ["v", "w", "x", "y", "z"], "E"), "Pick one.\nA. v\nB. w\nC. x\nD. y\nE. z\nAnswer:"),
    (mcq("Use the data.", ["1", "2"], "A", parts=[{"label": "a", "text": "Which is smaller?", "marks": 1}]),
     "Use the data.\n(a) Which is smaller?\nA. 1\nB. 2\nAnswer:"),
])
def test_other_option_counts_and_parts_render_in_the_same_form(question, expected):
    doc = mmlu_doc(question)
    assert render(DOC_TO_TEXT, doc) == expected
    assert doc["answer"] == "ABCDE".index(question.key)


@pytest.fixture(scope="module")
def tiny(tiny_model):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), AutoTokenizer.from_pretrained(tiny_model)


def run_lm_eval_cli(tiny_model: Path, folder: Path) -> dict[str, list[dict]]:
    """`lm_eval --model hf` on QUESTIONS through tasks that include lm_eval's own MMLU template: zero-shot, and 2-shot on SHOTS."""
    for name, items in (("test", QUESTIONS), ("dev", SHOTS)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps({k: v for k, v in mmlu_doc(q).items() if k != "letters"}) + "\n"
                                                      for q in items))
    description = json.dumps(DESCRIPTION.format(subject="physics"))
    for task, shots in (("check_0shot", 0), ("check_2shot", 2)):
        (folder / f"{task}.yaml").write_text(
            f"include: {MMLU_TEMPLATE}\ntask: {task}\ndataset_path: json\ndataset_kwargs:\n  data_files:\n"
            f"    test: {folder / 'test.jsonl'}\n    dev: {folder / 'dev.jsonl'}\n  cache_dir: {folder / 'cache'}\n"
            f"description: {description}\nnum_fewshot: {shots}\n")
    command = [str(Path(sys.executable).parent / "lm_eval"), "--model", "hf", "--model_args", f"pretrained={tiny_model},dtype=float32",
               "--device", "cpu", "--tasks", "check_0shot,check_2shot", "--include_path", str(folder), "--batch_size", "4",
               "--log_samples", "--output_path", str(folder / "out")]
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1"}
    out = subprocess.run(command, capture_output=True, text=True, env=env)
    assert out.returncode == 0, out.stderr[-3000:]
    samples = {}
    for task in ("check_0shot", "check_2shot"):
        (path,) = glob.glob(f"{folder}/out/**/samples_{task}_*.jsonl", recursive=True)
        samples[task] = sorted((json.loads(line) for line in open(path)), key=lambda sample: sample["doc_id"])
    return samples


def correct(logliks: list[dict[str, float]], keys: list[str]) -> list[bool]:
    return [max(scores, key=scores.get) == key for scores, key in zip(logliks, keys)]


@pytest.mark.slow
def test_logliks_agree_with_lm_evals_own_command_line_zero_and_few_shot(tiny, tiny_model, tmp_path):
    import torch

    model, tokenizer = tiny
    model.train()  # as in training's epoch checks: scoring must not leave it in eval mode, nor reseed anything
    rng = torch.get_rng_state()
    ours = {"check_0shot": mcq_logliks(model, tokenizer, QUESTIONS, subject_title="physics", batch_size=4),
            "check_2shot": mcq_logliks(model, tokenizer, QUESTIONS, subject_title="physics", shots=SHOTS, batch_size=4)}
    assert model.training and torch.equal(torch.get_rng_state(), rng)
    theirs = run_lm_eval_cli(tiny_model, tmp_path)
    keys = [q.key for q in QUESTIONS]
    for task, samples in theirs.items():
        cli = [{letter: float(resp[0]) for letter, resp in zip("ABCD", sample["filtered_resps"])} for sample in samples]
        assert [sample["acc"] for sample in samples] == [float(c) for c in correct(ours[task], keys)]  # the same items right
        for mine, cli_item in zip(ours[task], cli, strict=True):
            assert mine.keys() == cli_item.keys()
            assert all(abs(mine[letter] - cli_item[letter]) < 1e-4 for letter in mine), (mine, cli_item)
    # What lm_eval's MMLU task sent for the first item, two shots first: the prompt mcq_logliks builds too.
    prompt = theirs["check_2shot"][0]["arguments"]["gen_args_0"]
    assert prompt == {"arg_0": "The following are multiple choice questions (with answers) about physics.\n\n"
                               "What is the SI unit of energy?\nA. watt\nB. joule\nC. newton\nD. volt\nAnswer: B\n\n"
                               "What is 2 + 2?\nA. 3\nB. 4\nC. 5\nD. 6\nAnswer: B\n\n"
                               "What is the SI unit of force?\nA. newton\nB. joule\nC. watt\nD. pascal\nAnswer:", "arg_1": " A"}
    assert ours["check_0shot"] != ours["check_2shot"]  # the shots reach the model


@pytest.mark.slow
def test_a_loglik_is_the_log_softmax_of_the_continuation_tokens(tiny):
    import torch

    model, tokenizer = tiny
    (scores,) = mcq_logliks(model, tokenizer, QUESTIONS[:1], subject_title="physics")
    context = ("The following are multiple choice questions (with answers) about physics.\n\n"
               "What is the SI unit of force?\nA. newton\nB. joule\nC. watt\nD. pascal\nAnswer:")
    for letter in "ABCD":
        prompt, whole = tokenizer.encode(context), tokenizer.encode(context + " " + letter)
        with torch.no_grad():
            logprobs = model(torch.tensor([whole])).logits[0].log_softmax(-1)
        by_hand = sum(logprobs[t - 1, whole[t]].item() for t in range(len(prompt), len(whole)))
        assert scores[letter] == pytest.approx(by_hand, abs=1e-4)


CONVERSATIONS = [
    [{"role": "system", "content": "You are a physics tutor."}, {"role": "user", "content": "What is the unit of force?"},
     {"role": "assistant", "content": "The newton, N: the force that gives 1 kg an acceleration of 1 m/s².\nAnswer: N"}],
    [{"role": "user", "content": "Define power."}, {"role": "assistant", "content": "Power is the rate of doing work."}],
    [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "A much longer question about a ball thrown upwards at "
                                                                             "12 m/s: how high does it go, and when does it land?"},
     {"role": "assistant", "content": "7.3 m"}],
]


@pytest.mark.slow
def test_answer_loss_batched_equals_each_conversation_alone(tiny):
    import torch

    model, tokenizer = tiny
    batched = answer_loss(model, tokenizer, CONVERSATIONS, batch_size=3)
    for conversation, (nll, tokens) in zip(CONVERSATIONS, batched, strict=True):
        prompt = tokenizer.apply_chat_template(conversation[:-1], add_generation_prompt=True, tokenize=False)
        whole = tokenizer.apply_chat_template(conversation, tokenize=False)
        answer = whole[len(prompt):]
        assert answer == conversation[-1]["content"] + "<|im_end|>\n"  # the answer and its end of turn, as training counts it
        prompt_ids, whole_ids = tokenizer.encode(prompt), tokenizer.encode(whole)
        with torch.no_grad():
            logprobs = model(torch.tensor([whole_ids])).logits[0].log_softmax(-1)
        alone = -sum(logprobs[t - 1, whole_ids[t]].item() for t in range(len(prompt_ids), len(whole_ids)))
        assert tokens == len(whole_ids) - len(prompt_ids) and nll == pytest.approx(alone, rel=1e-5)
    alone = answer_loss(model, tokenizer, CONVERSATIONS, batch_size=1)
    assert [tokens for _, tokens in alone] == [tokens for _, tokens in batched]
    assert [nll for nll, _ in alone] == pytest.approx([nll for nll, _ in batched], rel=1e-5)


def test_a_conversation_without_a_final_answer_is_refused():
    from tutor.errors import TutorError

    with pytest.raises(TutorError, match=r"must end with an assistant message after the prompt; got roles \['system', 'user'\]"):
        answer_loss(None, None, [CONVERSATIONS[0][:2]])


@pytest.mark.slow
def test_a_peft_model_is_scored_with_its_adapter(tiny_model):
    import torch
    from peft import LoraConfig, get_peft_model
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tiny_model)
    torch.manual_seed(0)
    lora = LoraConfig(r=4, target_modules=["q_proj", "v_proj"], init_lora_weights=False)  # random, so the adapter changes the scores
    tuned = get_peft_model(AutoModelForCausalLM.from_pretrained(tiny_model, dtype=torch.float32), lora)
    with_adapter = mcq_logliks(tuned, tokenizer, QUESTIONS[:2], subject_title="physics")
    with tuned.disable_adapter():
        without = mcq_logliks(tuned, tokenizer, QUESTIONS[:2], subject_title="physics")
    merged = mcq_logliks(tuned.merge_and_unload(), tokenizer, QUESTIONS[:2], subject_title="physics")
    for adapted, plain, same in zip(with_adapter, without, merged):
        assert all(abs(adapted[k] - plain[k]) > 1e-4 for k in adapted)
        assert adapted == pytest.approx(same, abs=1e-4)
