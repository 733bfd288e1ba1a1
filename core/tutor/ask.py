"""The ask stage: the base model plus a subject's newest adapter answers one question.

The prompt is built exactly as the dataset built it (dataset.tutor_messages for
a bank question, the diagram template for a description), so a tuned model
sees at inference what it was trained on. The full serving surface is a later
stage; this is enough to see that training worked.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from . import runs
from .console import say as _say  # the default for `say`: a status line on stderr
from .errors import TutorError, UnknownName
from .registry import SubjectKit
from .workspace import Workspace


def prompt_for(kit: SubjectKit, workspace: Workspace, role: str, *, text: str | None = None, question_id: str | None = None,
               format_name: str | None = None):
    """(messages, diagram format or None, a line to show first or '')."""
    from . import dataset as ds
    from .prompts import render

    user_dirs = workspace.template_dirs(kit.name)
    if role == "diagram":
        fmt = kit.format(format_name) if format_name else kit.format_for(text or "")
        description, shown = text, ""
        if question_id:
            bank = _bank(kit, workspace)
            found = [d for d in bank.diagrams if d.question_id == question_id]
            if not found:
                raise TutorError(f"question {question_id!r} has no diagram in {bank.label}")
            description, fmt = found[0].description, kit.format(found[0].format)
            shown = f"{question_id} ({fmt.name}): {description}"
        return render(kit, "diagram", user_dirs, description=description, format=fmt), fmt, shown
    if format_name:
        raise TutorError("--format is for the diagram role")
    if question_id:
        bank = _bank(kit, workspace)
        question = {q.id: q for q in bank.questions}.get(question_id)
        if question is None:
            raise UnknownName("question", question_id, [q.id for q in bank.questions])
        messages = ds.tutor_messages(kit, question, user_dirs)
        return messages, None, f"{question_id}:\n{messages[-1]['content']}"
    return [{"role": "system", "content": ds.tutor_system_prompt(kit, user_dirs)}, {"role": "user", "content": text}], None, ""


class _Bank:
    def __init__(self, bank, label):
        self.questions, self.diagrams, self.label = bank.questions, bank.diagrams, label


def _bank(kit: SubjectKit, workspace: Workspace) -> _Bank:
    """The bank the answer dataset was built from, else the one `dataset build` would choose."""
    from . import dataset as ds
    from .bank import load_bank

    folder = ds.dataset_dir(workspace, kit.name, "answer")
    if (folder / ds.META).is_file():
        where = runs.read_meta(folder, ds.META).get("bank_path")
        if where and Path(where).exists():
            return _Bank(load_bank(kit, Path(where)), where)
    bank, label, _ = ds.choose_bank(kit, workspace)
    return _Bank(bank, label.replace("`", ""))


def draw(workspace: Workspace, fmt, reply: str) -> str:
    """Compile the diagram in a reply; a line naming the picture or the error."""
    from .default_plugins.rewards import diagram_code
    from .diagrams import renderer_for

    code = diagram_code(reply, fmt.name)
    if not code:
        return "diagram: the reply has no code to compile"
    result = renderer_for(workspace).render(fmt, code)
    return f"diagram: {result.png}" if result.ok else f"diagram does not compile: {result.error}"


def load_for_inference(workspace: Workspace, subject: str, role: str, *, adapter: Path | None = None, base_only: bool = False,
                       base: str | None = None, say: Callable[[str], None] = _say):
    """(model, tokenizer, adapter folder or None): the base model plus the subject's latest adapter of `role`."""
    import torch

    from .basemodels import load_model, load_tokenizer

    if not base_only:
        adapter = adapter or runs.latest_adapter(workspace, subject, role)
        if adapter is None:
            raise TutorError(f"{subject} has no trained {role} adapter yet: run `tutor --subject {subject} train --role {role}` "
                             f"(or ask with --base for the untrained model)")
        meta = runs.read_meta(adapter)
        runs.check_bound(meta, subject, role, f"the adapter {adapter}", f"answer {subject} with it")
        base = meta["base_model"]
    # fp32 on a CPU: bf16 decoding there drifts from what was measured in training, for no gain at this size.
    model = load_model(base, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32, say=say)
    if torch.cuda.is_available():
        model = model.to("cuda")
    tokenizer = load_tokenizer(base, say=say)
    if not base_only:
        from peft import PeftModel

        model = PeftModel.from_pretrained(model, str(adapter))
    model.eval()
    return model, tokenizer, None if base_only else adapter


class Reply(NamedTuple):
    text: str
    cut: bool  # stopped by max_new_tokens rather than by the model's end of turn


def generate(model, tokenizer, messages: list[dict[str, str]], *, max_new_tokens: int = 384,
             stream: Callable[[str], None] | None = None) -> Reply:
    """Greedy decoding of the assistant's reply (deterministic: the same adapter answers the same way)."""
    import torch
    from transformers import TextIteratorStreamer

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    prompt_length = inputs["input_ids"].shape[1]
    kwargs = {**inputs, "max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": 1.1,
              "pad_token_id": tokenizer.pad_token_id or tokenizer.eos_token_id}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if stream else None

    def run():
        try:
            with torch.no_grad():
                return model.generate(**kwargs, streamer=streamer)
        except BaseException:
            if streamer is not None:
                streamer.end()  # else the loop below would wait for text that never comes
            raise

    with ThreadPoolExecutor(max_workers=1) as pool:
        future = pool.submit(run)
        if streamer is not None:
            # One piece behind, so that a character cut in half by max_new_tokens (the streamer's final flush
            # decodes its first bytes as U+FFFD) can be dropped before it is shown.
            held = ""
            for piece in streamer:
                if held:
                    stream(held)
                held = piece
            stream(held.rstrip("\ufffd"))
        output = future.result()  # generate's own error, if it failed, is raised here
    new_tokens = output[0, prompt_length:]
    text = tokenizer.decode(new_tokens, skip_special_tokens=True).rstrip("\ufffd").strip()
    cut = len(new_tokens) >= max_new_tokens and int(new_tokens[-1]) != tokenizer.eos_token_id
    return Reply(text, cut)
