"""The model behind `tutor serve`: one base model, every subject's adapters loaded into it by name.

Each served model id is a subject (its newest answer adapter), `<subject>:diagram`
(its diagram adapter) or the base model's own name. A request names its
adapter per call through peft's `adapter_names=` (`"__base__"` for the base),
so no global active adapter is ever switched while another request runs.

An adapter that cannot be served (another base model, a corrupt folder) is
refused at start with one line; the others still serve.

This first version decodes one request at a time behind a bounded queue:
requests wait their turn (past the queue: 429), and a client that goes away
stops its generation at the next token, freeing the model for the next one.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import runs
from ..errors import TutorError
from ..workspace import Workspace

BASE_ADAPTER = "__base__"  # peft's name for "no adapter" in a mixed batch


@dataclass
class Served:
    """One model id of the server: what it is, and the adapter it runs (None: the base model)."""

    id: str
    subject: str | None
    role: str | None
    adapter: Path | None


@dataclass
class Output:
    text: str
    finish_reason: str  # "stop" or "length"
    prompt_tokens: int
    completion_tokens: int


@dataclass
class Backend:
    """The loaded base model and adapters; `generate` answers one request (callers hold `busy` while it runs)."""

    base: str
    model: object
    tokenizer: object
    models: dict[str, Served]
    refused: list[str] = field(default_factory=list)  # one line per adapter left out at start
    busy: threading.Lock = field(default_factory=threading.Lock)

    @classmethod
    def load(cls, workspace: Workspace, subjects: list[str], *, say: Callable[[str], None]) -> Backend:
        """The base model (the adapters' own, else the workspace's) with each subject's newest adapters."""
        import torch

        from ..basemodels import load_model, load_tokenizer

        found, refused = [], []
        for subject in subjects:
            for role in runs.ROLES:
                folder = runs.latest_adapter(workspace, subject, role)
                if folder is None:
                    continue
                try:
                    meta = runs.read_meta(folder)
                    runs.check_bound(meta, subject, role, f"the adapter {folder}", f"serve {subject} with it")
                except TutorError as err:
                    refused.append(str(err))
                    continue
                found.append((Served(subject if role == "answer" else f"{subject}:{role}", subject, role, folder), meta["base_model"]))
        bases = [base for _, base in found]
        base = max(set(bases), key=bases.count) if bases else workspace.config().model.base
        for served, own in found:
            if own != base:
                refused.append(f"{served.id}: its adapter {served.adapter} was trained on {own}, not on {base}, the base being served")
        found = [served for served, own in found if own == base]
        model = load_model(base, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32, say=say)
        tokenizer = load_tokenizer(base, say=say)
        models = {}
        for served in found:
            try:
                model = _with_adapter(model, served)
            except Exception as err:  # noqa: BLE001 - a corrupt folder is refused, the others still serve
                refused.append(f"{served.id}: the adapter {served.adapter} cannot be loaded ({type(err).__name__}: {err})")
                continue
            models[served.id] = served
        name = Path(base).name if Path(base).is_dir() else base
        models[name] = Served(name, None, None, None)
        model.eval()
        return cls(base=base, model=model, tokenizer=tokenizer, models=models, refused=refused)

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)

    def generate(self, served: Served, prompt: list[int], *, max_tokens: int, temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: list[str] | None = None, on_text: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False) -> Output:
        """One reply, greedy unless temperature > 0; `on_text` gets it piece by piece; `cancelled()` stops it at the next token."""
        import torch
        from transformers import StoppingCriteria, StoppingCriteriaList, TextIteratorStreamer

        from ..infer.generate import REPETITION_PENALTY, stop_ids, until_stop

        class Cancelled(StoppingCriteria):
            def __call__(self, input_ids, scores, **kwargs):
                return torch.full((input_ids.shape[0],), cancelled(), dtype=torch.bool, device=input_ids.device)

        stops = stop_ids(self.model, self.tokenizer)
        ids = torch.tensor([prompt], device=self.model.device)
        sampling = bool(temperature and temperature > 0)
        kwargs = {"input_ids": ids, "attention_mask": torch.ones_like(ids), "max_new_tokens": max_tokens, "do_sample": sampling,
                  "repetition_penalty": REPETITION_PENALTY, "eos_token_id": sorted(stops),
                  "pad_token_id": self.tokenizer.pad_token_id if self.tokenizer.pad_token_id is not None else min(stops),
                  "stopping_criteria": StoppingCriteriaList([Cancelled()]),
                  "temperature": temperature if sampling else None, "top_p": top_p if sampling else None, "top_k": None}
        if stop:
            kwargs.update(stop_strings=stop, tokenizer=self.tokenizer)
        if self.models and any(s.adapter for s in self.models.values()):
            kwargs["adapter_names"] = [served.id if served.adapter else BASE_ADAPTER]
        streamer = TextIteratorStreamer(self.tokenizer, skip_prompt=True, skip_special_tokens=True) if on_text else None
        if seed is not None:
            torch.manual_seed(seed)
        result: dict = {}

        def run():
            try:
                with torch.no_grad():
                    result["output"] = self.model.generate(**kwargs, streamer=streamer)
            except BaseException as err:  # noqa: BLE001 - raised again in the caller's thread
                result["error"] = err
                if streamer is not None:
                    streamer.end()

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        if streamer is not None:
            for piece in streamer:
                if piece:
                    on_text(piece)
        worker.join()
        if "error" in result:
            raise result["error"]
        new = result["output"][0, len(prompt):].tolist()
        kept, stopped = until_stop(new, stops)
        text = self.tokenizer.decode(kept, skip_special_tokens=True)
        if stop:
            cut = min((text.find(s) for s in stop if s in text), default=-1)
            text = text[:cut] if cut >= 0 else text
        finish = "length" if not stopped and len(new) >= max_tokens and not (stop and cut >= 0) else "stop"
        return Output(text=text, finish_reason=finish, prompt_tokens=len(prompt), completion_tokens=len(kept))


def _with_adapter(model, served: Served):
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(served.adapter), adapter_name=served.id)
        return model
    return PeftModel.from_pretrained(model, str(served.adapter), adapter_name=served.id)
