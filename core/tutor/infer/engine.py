"""The two models a Tutor mode runs on: the base model with the subject's adapters, or the teacher.

Both take chat messages and a role (answer or diagram) and give a Completion.
A mode never knows which one it talks to.

- LocalEngine: the base model, loaded once, with the subject's newest adapter
  of each role loaded into it by name (the answer and diagram adapters share
  the base weights). A role without an adapter is refused with the command
  that trains one, unless the engine is the base model alone.
- TeacherEngine: the teacher's OpenAI-compatible endpoint through
  llm_client.LLMClient, so every reply goes to the teacher's response log:
  the same prompt is never paid for twice, and a slow endpoint fails with
  the reason after its deadline instead of hanging. Its reply arrives whole
  (the log keeps whole replies): a streaming caller gets it as one piece.
"""

from __future__ import annotations

import contextlib
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import NamedTuple

from .. import runs
from ..console import say as _say
from ..errors import TutorError
from ..workspace import Workspace

MAX_NEW_TOKENS = 384


class Completion(NamedTuple):
    text: str
    cut: bool  # stopped by the token limit, not by the model's end of turn
    model: str  # what wrote it: 'base', an adapter folder, or 'teacher:<model>'


class LocalEngine:
    """The base model plus the subject's adapters (or `adapter` for the answer role), loaded on first use."""

    def __init__(self, workspace: Workspace, subject: str, *, adapter: Path | None = None, adapter_role: str = "answer",
                 base_only: bool = False, max_new_tokens: int = MAX_NEW_TOKENS, say: Callable[[str], None] = _say):
        self.workspace, self.subject, self.adapter, self.adapter_role, self.base_only = workspace, subject, adapter, adapter_role, base_only
        self.max_new_tokens, self.say = max_new_tokens, say
        self.model = self.tokenizer = None
        self.adapters: dict[str, Path] = {}  # role -> folder, as loaded into the model under the role's name

    @property
    def label(self) -> str:
        return "base" if self.base_only else "local"

    @contextlib.contextmanager
    def adapters_off(self, off: bool = True):
        """While inside, every role runs on the base model alone (the weights stay loaded): `answer --compare`."""
        kept, self.base_only = self.base_only, self.base_only or off
        try:
            yield
        finally:
            self.base_only = kept

    def adapter_for(self, role: str) -> Path | None:
        if self.base_only:
            return None
        if role == self.adapter_role and self.adapter:
            return self.adapter
        return runs.latest_adapter(self.workspace, self.subject, role)

    def load(self, role: str) -> str | None:
        """Load the base model (once) and the role's adapter; the adapter's name in the model, or None for the base alone."""
        import torch

        from ..basemodels import load_model, load_tokenizer

        folder = self.adapter_for(role)
        if folder is None and not self.base_only:
            raise TutorError(f"{self.subject} has no trained {role} adapter yet: run `tutor --subject {self.subject} train --role {role}` "
                             f"(or use the base model alone: --base, or the teacher: --via teacher)")
        base = self.workspace.config().model.base
        if folder is not None:
            meta = runs.read_meta(folder)
            runs.check_bound(meta, self.subject, role, f"the adapter {folder}", f"answer {self.subject} with it")
            base = meta["base_model"]
        if self.model is None:
            # fp32 on a CPU: bf16 decoding there drifts from what was measured in training, for no gain at this size.
            self.model = load_model(base, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32, say=self.say)
            if torch.cuda.is_available():
                self.model = self.model.to("cuda")
            self.tokenizer = load_tokenizer(base, say=self.say)
            self.model.eval()
        if folder is None:
            return None
        if role not in self.adapters:
            from peft import PeftModel

            if isinstance(self.model, PeftModel):
                self.model.load_adapter(str(folder), adapter_name=role)
            else:
                self.model = PeftModel.from_pretrained(self.model, str(folder), adapter_name=role).eval()
            self.adapters[role] = folder
        return role

    def complete(self, messages: list[dict[str, str]], *, role: str = "answer", on_text: Callable[[str], None] | None = None,
                 max_new_tokens: int | None = None, item: str = "") -> Completion:
        """The reply to `messages` with the role's adapter (`item` names the request in the teacher's log; unused here)."""
        name = self.load(role)
        if name is not None:
            self.model.set_adapter(name)
            use = contextlib.nullcontext()
        else:
            use = self.model.disable_adapter() if self.adapters else contextlib.nullcontext()
        with use:
            text, cut = stream_generate(self.model, self.tokenizer, messages, max_new_tokens=max_new_tokens or self.max_new_tokens,
                                        on_text=on_text)
        return Completion(text, cut, str(self.adapters[name]) if name else "base")


def stream_generate(model, tokenizer, messages: list[dict[str, str]], *, max_new_tokens: int,
                    on_text: Callable[[str], None] | None = None) -> tuple[str, bool]:
    """Greedy decoding of one reply (deterministic: the same adapter answers the same way), its text handed to
    `on_text` piece by piece as it is decoded; (text, cut)."""
    import torch
    from transformers import TextIteratorStreamer

    from .generate import REPETITION_PENALTY, stop_ids, until_stop

    inputs = tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_tensors="pt", return_dict=True)
    inputs = {k: v.to(model.device) for k, v in inputs.items()}
    prompt_length = inputs["input_ids"].shape[1]
    stops = stop_ids(model, tokenizer)
    kwargs = {**inputs, "max_new_tokens": max_new_tokens, "do_sample": False, "repetition_penalty": REPETITION_PENALTY,
              "eos_token_id": sorted(stops), "pad_token_id": tokenizer.pad_token_id if tokenizer.pad_token_id is not None else min(stops),
              "temperature": None, "top_p": None, "top_k": None}
    streamer = TextIteratorStreamer(tokenizer, skip_prompt=True, skip_special_tokens=True) if on_text else None

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
                    on_text(held)
                held = piece
            if held.rstrip("\ufffd"):
                on_text(held.rstrip("\ufffd"))
        output = future.result()  # generate's own error, if it failed, is raised here
    kept, stopped = until_stop(output[0, prompt_length:].tolist(), stops)
    return tokenizer.decode(kept, skip_special_tokens=True).rstrip("\ufffd").strip(), not stopped


class TeacherEngine:
    """The teacher's endpoint ([teacher] in tutor.toml, TUTOR_TEACHER_*), its replies kept in the response log."""

    def __init__(self, workspace: Workspace, subject: str):
        from ..llm_client import api_key
        from ..teach import teacher_config

        self.workspace, self.subject = workspace, subject
        self.cfg = teacher_config(workspace)  # a teacher without a model: one line naming the setting to add
        self.key = api_key(self.cfg)
        self.label = f"teacher:{self.cfg.model}"

    def complete(self, messages: list[dict[str, str]], *, role: str = "answer", on_text: Callable[[str], None] | None = None,
                 max_new_tokens: int | None = None, item: str = "tutor") -> Completion:
        import asyncio

        from ..llm_client import ItemFailed, LLMClient, ResponseLog, RunStopped, split_reasoning

        async def ask():
            log = ResponseLog(self.workspace.teacher_log)
            client = LLMClient(self.cfg, log, self.key, meta={"stage": f"tutor-{role}", "subject": self.subject})
            try:
                return await client.ask(messages, started=time.monotonic(), item=item)
            finally:
                await client.close()
                log.close()

        try:
            reply = asyncio.run(ask())
        except (ItemFailed, RunStopped) as err:
            raise TutorError(f"the teacher at {self.cfg.base_url} gave no reply: {err}") from None
        text, _ = split_reasoning(reply.content, reply.reasoning)
        text = text.strip()
        if on_text and text:
            on_text(text)
        return Completion(text, reply.finish_reason == "length", self.label)
