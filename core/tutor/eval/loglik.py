"""Teacher-forced scores of an already-loaded model: MCQ option log-likelihoods, and the loss on gold answers.

MCQ accuracy by log-likelihood is what published tables report, and
lm-evaluation-harness computes the numbers people compare against; so it is
the engine here, used as a library. The questions become a local JSON Lines
task in MMLU's form (its description line, its `doc_to_text`, the
log-likelihood of " A", " B", ... after "Answer:"), and HFLM is handed the
model eval already loaded (a base model, or a peft model with its adapter),
so a run loads each model once. tests/test_eval_loglik.py checks the numbers
against `lm_eval --model hf` itself and the prompt against its MMLU task.

The loss is the answer role's validation loss, on any conversations: the
summed negative log-likelihood of the assistant turn's tokens given the chat
template's prompt, counted as training counts them.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager, redirect_stderr
from pathlib import Path
from typing import TYPE_CHECKING

from ..answers import part_label
from ..errors import TutorError
from ..infer.generate import prompt_text

if TYPE_CHECKING:
    from ..models import Question

TASK = "tutor_mcq"
DESCRIPTION = "The following are multiple choice questions (with answers) about {subject}.\n\n"  # MMLU's, per subject
# MMLU's doc_to_text (lm_eval/tasks/mmlu/default/_default_template_yaml) with its four option lines written as a loop,
# so that any number of options renders; with four it is MMLU's text, character for character.
DOC_TO_TEXT = "{{question.strip()}}\n{% for choice in choices %}{{letters[loop.index0]}}. {{choice}}\n{% endfor %}Answer:"


def mcq_logliks(model, tokenizer, questions: Sequence[Question], *, subject_title: str, shots: Sequence[Question] = (),
                batch_size: int = 16) -> list[dict[str, float]]:
    """For each question, option letter -> log-likelihood of " <letter>" after its MMLU-form prompt.

    The prompt: the description line about `subject_title`, then each of
    `shots` with its answer ("...Answer: B", separated by blank lines, as
    lm_eval writes few-shot examples), then the question and "Answer:". The
    question text is its stem, then each part on a line of its own as
    "(a) text" (MMLU questions have no parts; the stem alone is the usual case).
    """
    if not questions:
        return []
    from lm_eval import simple_evaluate
    from lm_eval.models.huggingface import HFLM
    from lm_eval.tasks import TaskManager

    with tempfile.TemporaryDirectory(prefix="tutor-mcq-") as tmp, _quiet_lm_eval(), _evaluating(model):
        config = task_config(Path(tmp), questions, subject_title, shots)
        lm = HFLM(pretrained=model, tokenizer=tokenizer, batch_size=batch_size)
        # No global seeds: lm_eval would reseed the caller's random, numpy and torch; nothing here samples.
        results = simple_evaluate(model=lm, tasks=[config], task_manager=TaskManager(include_defaults=False), log_samples=True,
                                  bootstrap_iters=0, random_seed=None, numpy_random_seed=None, torch_random_seed=None)
    samples = sorted(results["samples"][TASK], key=lambda sample: sample["doc_id"])
    if len(samples) != len(questions):
        raise TutorError(f"lm_eval scored {len(samples)} of {len(questions)} questions")
    return [{letter: float(resp[0]) for letter, resp in zip(sample["doc"]["letters"], sample["filtered_resps"], strict=True)}
            for sample in samples]


def task_config(folder: Path, questions: Sequence[Question], subject_title: str, shots: Sequence[Question] = ()) -> dict:
    """An lm_eval multiple_choice task over the questions (test split) and the shots (dev split), written into `folder`."""
    splits = {"test": questions, "dev": shots} if shots else {"test": questions}
    files = {}
    for split, items in splits.items():
        files[split] = str(folder / f"{split}.jsonl")
        Path(files[split]).write_text("".join(json.dumps(mmlu_doc(q), ensure_ascii=False) + "\n" for q in items), encoding="utf-8")
    config = {
        "task": TASK,
        "dataset_path": "json",
        # The arrow cache goes with the folder: each call's data is new, and ~/.cache would keep every copy.
        "dataset_kwargs": {"data_files": files, "cache_dir": str(folder / "cache")},
        "test_split": "test",
        "output_type": "multiple_choice",
        "description": DESCRIPTION.format(subject=subject_title),
        "doc_to_text": DOC_TO_TEXT,
        "doc_to_choice": "letters",
        "doc_to_target": "answer",
        "metric_list": [{"metric": "acc", "aggregation": "mean", "higher_is_better": True}],
        "num_fewshot": len(shots),
    }
    if shots:  # as MMLU takes them: the first K of the dev split, in order
        config |= {"fewshot_split": "dev", "fewshot_config": {"sampler": "first_n"}}
    return config


def mmlu_doc(question: Question) -> dict:
    """A question as an MMLU row (question, choices, answer index), with its option letters."""
    letters = sorted(question.options)
    if question.key not in letters:
        raise TutorError(f"question {question.id}: key {question.key!r} is not one of its options {letters}")
    text = "\n".join([question.stem.strip()] + [f"{part_label(p.label)} {p.text.strip()}" for p in question.parts])
    return {"question": text, "choices": [question.options[letter] for letter in letters], "answer": letters.index(question.key),
            "letters": letters}


def answer_loss(model, tokenizer, conversations: Sequence[list[dict]], *, batch_size: int = 8) -> list[tuple[float, int]]:
    """For each conversation, (summed NLL of its last message's tokens given the rest, how many tokens that is).

    The prompt is the chat template's, ready for the assistant's turn
    (generate.prompt_text); the scored tokens are what the template adds after
    it for the last message: the answer and its end-of-turn marker, the tokens
    training's completion-only loss counts, so summed NLL over summed tokens
    measures what training's validation loss does. Batches are sorted by
    length and padded on the left, so every answer ends in the last column and
    only the logits of the last positions are computed (a full [batch, length,
    vocabulary] tensor would not fit a small machine's memory for long prompts).
    """
    import torch

    encoded = [_prompt_and_answer(tokenizer, messages) for messages in conversations]
    order = sorted(range(len(encoded)), key=lambda i: -sum(map(len, encoded[i])))
    results: list[tuple[float, int]] = [(0.0, 0)] * len(encoded)
    with torch.no_grad(), _evaluating(model):
        for start in range(0, len(order), batch_size):
            rows = order[start:start + batch_size]
            for row, nll in zip(rows, _batch_nll(model, [encoded[i] for i in rows])):
                results[row] = (nll, len(encoded[row][1]))
    return results


def _prompt_and_answer(tokenizer, messages: list[dict]) -> tuple[list[int], list[int]]:
    """The token ids of the prompt and of the last message, split as TRL splits prompt and completion."""
    if len(messages) < 2 or messages[-1].get("role") != "assistant":
        raise TutorError(f"a conversation to score must end with an assistant message after the prompt; got roles "
                         f"{[m.get('role') for m in messages]}")
    prompt = prompt_text(tokenizer, messages[:-1])
    whole = tokenizer.apply_chat_template(messages, tokenize=False)
    if not whole.startswith(prompt):
        raise TutorError("the chat template writes the earlier turns differently once the answer is added; "
                         "its prompt and answer tokens cannot be told apart")
    prompt_ids = tokenizer(prompt, add_special_tokens=False)["input_ids"]
    whole_ids = tokenizer(whole, add_special_tokens=False)["input_ids"]
    return prompt_ids, whole_ids[len(prompt_ids):]


def _batch_nll(model, pairs: list[tuple[list[int], list[int]]]) -> list[float]:
    """Summed NLL of each pair's answer ids given its prompt ids, in one forward pass."""
    import torch

    sequences = [prompt + answer for prompt, answer in pairs]
    width = max(map(len, sequences))
    ids = torch.tensor([[0] * (width - len(s)) + s for s in sequences], device=model.device)
    mask = torch.tensor([[0] * (width - len(s)) + [1] * len(s) for s in sequences], device=model.device)
    # Positions count from each row's first real token, so a padded row is computed as it would be alone.
    positions = (mask.cumsum(-1) - 1).clamp(min=0)
    keep = max(len(answer) for _, answer in pairs) + 1  # the logits that predict the longest answer, and one spare
    logits = model(input_ids=ids, attention_mask=mask, position_ids=positions, logits_to_keep=keep).logits
    totals = []
    for row, (_, answer) in enumerate(pairs):
        predicting = logits[row, -len(answer) - 1:-1].float().log_softmax(-1)  # position t predicts token t + 1
        target = torch.tensor(answer, device=predicting.device)
        totals.append(-predicting.gather(-1, target[:, None]).sum().item())
    return totals


@contextmanager
def _evaluating(model) -> Iterator[None]:
    """Eval mode (no dropout) for the scoring, then the mode the caller had (training's epoch checks call this mid-training)."""
    training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(training)


@contextmanager
def _quiet_lm_eval() -> Iterator[None]:
    """lm_eval's logging, its progress bars and the datasets library's off: eval shows its own progress.

    lm_eval's bars (tqdm, one per stage) have no switch that reaches them all
    through simple_evaluate, so stderr is set aside for the call; errors are
    raised, not printed, and still reach the caller.
    """
    import datasets

    logger = logging.getLogger("lm_eval")
    level, bars = logger.level, not datasets.are_progress_bars_disabled()
    logger.setLevel(logging.ERROR)
    datasets.disable_progress_bars()
    try:
        with redirect_stderr(io.StringIO()):
            yield
    finally:
        logger.setLevel(level)
        if bars:
            datasets.enable_progress_bars()
