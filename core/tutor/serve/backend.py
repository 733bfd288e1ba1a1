"""The model behind `tutor serve`: one base model, every subject's adapters loaded into it by name.

Each served model id is a subject (its newest answer adapter), `<subject>:diagram`
(its diagram adapter) or the base model's own name. A request names its
adapter per call through peft's `adapter_names=` (`"__base__"` for the base),
so no global active adapter is ever switched while another request runs.

An adapter that cannot be served (another base model, a corrupt folder) is
refused at start with one line; the others still serve.

Requests decode together in batcher.Scheduler's continuous batch, whatever
their adapters: a new one joins at the next step, and one that ends (or whose
client went away) leaves at once.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from .. import runs
from ..errors import TutorError
from ..infer.generate import stop_ids
from ..workspace import Workspace
from .batcher import BASE_ADAPTER, Job, Output, Scheduler


@dataclass
class Served:
    """One model id of the server: what it is, and the adapter it runs (None: the base model)."""

    id: str
    subject: str | None
    role: str | None
    adapter: Path | None


@dataclass
class Backend:
    """The loaded base model and adapters, and the batcher decoding every request on them."""

    base: str
    model: object
    tokenizer: object
    models: dict[str, Served]
    scheduler: Scheduler
    workspace: Workspace | None = None
    refused: list[str] = field(default_factory=list)  # one line per adapter left out at start

    @classmethod
    def load(cls, workspace: Workspace, subjects: list[str], *, say: Callable[[str], None], max_batch: int = 8) -> Backend:
        """The base model (the adapters' own, else the workspace's) with each subject's newest adapters."""
        import torch

        from ..basemodels import load_model, load_tokenizer

        base, found, refused = find_adapters(workspace, subjects)
        model = load_model(base, dtype=torch.bfloat16 if torch.cuda.is_available() else torch.float32, say=say)
        if torch.cuda.is_available():
            model = model.to("cuda")
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
        from peft import PeftModel

        from .lora import StackedLora, Unstackable

        lora = None
        if isinstance(model, PeftModel):
            try:
                lora = StackedLora(model, [name for name, served in models.items() if served.adapter])
            except Unstackable as why:
                say(f"mixed-adapter batches through peft's adapter_names ({why})")
        scheduler = Scheduler(model, tokenizer, stop_ids(model, tokenizer), max_batch=max_batch, mixed=isinstance(model, PeftModel),
                              lora=lora)
        return cls(base=base, model=model, tokenizer=tokenizer, models=models, scheduler=scheduler, workspace=workspace, refused=refused)

    def prompt_tokens(self, messages: list[dict]) -> list[int]:
        return self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=True, return_dict=False)

    def generate(self, served: Served, prompt: list[int], *, max_tokens: int, temperature: float | None = None, top_p: float | None = None,
                 seed: int | None = None, stop: list[str] | None = None, on_text: Callable[[str], None] | None = None,
                 cancelled: Callable[[], bool] = lambda: False, messages: list[dict] | None = None, ignore_eos: bool = False) -> Output:
        """One reply, greedy unless temperature > 0, decoded in the running batch; `on_text` gets it piece by piece (from the
        batcher's thread); `cancelled()` ends it at the next step. Blocks until it ends: callers run it in a worker thread."""
        job = Job(prompt=prompt, adapter=served.id if served.adapter else None, max_tokens=max_tokens, temperature=temperature,
                  top_p=top_p, seed=seed, stop=list(stop or []), on_text=on_text, cancelled=cancelled, ignore_eos=ignore_eos,
                  prefix=self.shared_prefix(messages, prompt))
        return self.scheduler.submit(job).wait()

    def shared_prefix(self, messages: list[dict] | None, prompt: list[int]) -> int:
        """How many leading tokens of `prompt` are its system message, as the chat template writes it (0: none, or unknown)."""
        if not messages or messages[0].get("role") != "system" or len(messages) < 2:
            return 0
        try:
            system = self.tokenizer.apply_chat_template(messages[:1], tokenize=True, return_dict=False)
        except Exception:  # noqa: BLE001 - a template that cannot render a system message alone: no sharing
            return 0
        return len(system) if prompt[:len(system)] == system else 0

    def metrics(self) -> dict:
        """Requests and tokens per model id, the batch now and the decoding steps so far."""
        names = {(served.id if served.adapter else BASE_ADAPTER): served.id for served in self.models.values()}
        sched = self.scheduler
        return {"engine": "local", "running": len(sched.running), "peak_batch": sched.peak, "waiting": len(sched.waiting),
                "steps": sched.steps, "row_steps": sched.row_steps, "prefix_hits": sched.prefix_hits,
                "uptime_s": time.monotonic() - sched.started,
                "models": {names.get(key, key): dict(counts) for key, counts in list(sched.counts.items())}}

    def close(self) -> None:
        self.scheduler.close()


def find_adapters(workspace: Workspace, subjects: list[str]) -> tuple[str, list[Served], list[str]]:
    """(the base model, the servable adapters on it, one line per refused one), chosen as Backend.load chooses them.

    Each subject's newest adapter per role; one of another subject or role, or with unreadable metadata, is refused;
    the base is the one most adapters were trained on (else the workspace's), and adapters of any other base are refused.
    """
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
    return base, [served for served, own in found if own == base], refused


def _with_adapter(model, served: Served):
    from peft import PeftModel

    if isinstance(model, PeftModel):
        model.load_adapter(str(served.adapter), adapter_name=served.id)
        return model
    return PeftModel.from_pretrained(model, str(served.adapter), adapter_name=served.id)
