"""The models an evaluation compares, and one load of each base model they share.

`--models base,latest,PATH` (or `--base` and repeated `--adapter`) names
them; `NAME+rag` is that model with the knowledge base's chunks in its
prompts (`eval --rag` adds one for each), so with and without retrieval are
compared on the same items. An adapter is bound to its subject (another subject's is refused) and
brings its own base model from tutor-adapter.json; 'base' is that same base
model without any adapter, so base vs tuned compares like with like. Each
base model is loaded once; its adapters are loaded into one peft model by
name and switched between, and the plain base is the same weights with the
adapters disabled.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, replace
from pathlib import Path
from typing import TYPE_CHECKING

from .. import runs
from ..errors import TutorError
from .results import RAG_LABEL

if TYPE_CHECKING:
    from ..workspace import Workspace


@dataclass(frozen=True)
class Entry:
    """One model of the lineup: a label, the base model, and the adapter of each role it is evaluated in."""

    label: str
    base: str
    answer: Path | None = None  # the answer-role adapter; None: the base model answers (or, for a diagram adapter, nothing)
    diagram: Path | None = None  # the diagram-role adapter; None: the base model draws (or nothing, see roles)
    roles: tuple[str, ...] = ("answer", "diagram")  # which roles this entry is evaluated in
    rag: bool = False  # the knowledge base's chunks go into its answer prompts

    @property
    def is_base(self) -> bool:
        return self.answer is None and self.diagram is None


def parse(spec: list[str], workspace: Workspace, subject: str, default_base: str) -> list[Entry]:
    """Entries for `base`, `latest` and adapter folders, in the order given; the base model first when it is asked for."""
    if not spec:
        raise TutorError("no model to evaluate: give --models base,latest (or --base, --adapter latest|PATH)")
    adapters: list[Entry] = []
    want_base = base_rag = False
    for item in dict.fromkeys(s.strip() for s in spec if s.strip()):
        name, rag = (item.removesuffix("+rag").strip(), True) if item.endswith("+rag") else (item, False)
        if name == "base":
            want_base, base_rag = want_base or not rag, base_rag or rag
            continue
        entry = _latest(workspace, subject) if name == "latest" else _folder(Path(name), subject)
        adapters.append(replace(entry, label=f"{entry.label}{RAG_LABEL}", roles=("answer",), rag=True) if rag else entry)
    bases = list(dict.fromkeys(e.base for e in adapters))
    if len(bases) > 1 and (want_base or base_rag):
        raise TutorError(f"the adapters were trained on different base models ({', '.join(bases)}): 'base' would be ambiguous; "
                         "evaluate them in separate runs")
    base = bases[0] if bases else default_base
    lead = [Entry("base", base)] if want_base else []
    return lead + ([Entry(f"base{RAG_LABEL}", base, roles=("answer",), rag=True)] if base_rag else []) + _unique(adapters)


def _latest(workspace: Workspace, subject: str) -> Entry:
    answer = runs.latest_adapter(workspace, subject, "answer")
    if answer is None:
        raise TutorError(f"{subject} has no trained answer adapter: run `tutor --subject {subject} train` "
                         f"(or evaluate the base model alone with --models base)")
    meta = runs.read_meta(answer)
    diagram = runs.latest_adapter(workspace, subject, "diagram")
    if diagram is not None and runs.read_meta(diagram).get("base_model") != meta["base_model"]:
        diagram = None  # drawn on another base: not the same model, so not this entry's
    return Entry(f"latest ({answer.name})", meta["base_model"], answer, diagram, ("answer", "diagram") if diagram else ("answer",))


def _folder(path: Path, subject: str) -> Entry:
    if not path.is_dir():
        raise TutorError(f"{path}: no such adapter folder (give base, latest or the folder of a finished adapter run)")
    meta = runs.read_meta(path)
    role = meta.get("role")
    if meta.get("subject") != subject:  # check_bound's refusal, for either role
        runs.check_bound(meta, subject, role, f"the adapter {path}", f"evaluate {subject} with it")
    if role == "diagram":
        return Entry(path.name, meta["base_model"], None, path, ("diagram",))
    runs.check_bound(meta, subject, "answer", f"the adapter {path}", f"evaluate {subject} with it")
    return Entry(path.name, meta["base_model"], path, None, ("answer",))


def _unique(entries: list[Entry]) -> list[Entry]:
    """The same adapter named twice (latest and its folder) is evaluated once; labels stay unique."""
    seen: set[tuple] = set()
    out = []
    for e in entries:
        if (e.answer, e.diagram, e.rag) not in seen:
            seen.add((e.answer, e.diagram, e.rag))
            out.append(e)
    return out


class Loaded:
    """A base model with every adapter of the lineup that uses it, loaded once; `use(entry, role)` makes one of them answer."""

    def __init__(self, base: str, entries: list[Entry], say: Callable[[str], None]):
        import torch

        from ..basemodels import load_model, load_tokenizer

        cuda = torch.cuda.is_available()
        # fp32 on a CPU, as ask: bf16 decoding there drifts from what was measured in training, for no gain at this size.
        self.model = load_model(base, dtype=torch.bfloat16 if cuda else torch.float32, say=say)
        if cuda:
            self.model = self.model.to("cuda")
        self.tokenizer = load_tokenizer(base, say=say)
        if self.tokenizer.pad_token is None:
            self.tokenizer.pad_token = self.tokenizer.eos_token
        self.names: dict[Path, str] = {}
        for entry in entries:
            for path in (entry.answer, entry.diagram):
                if path is not None and path not in self.names:
                    self._add(path)
        self.model.eval()

    def _add(self, path: Path) -> None:
        name = f"a{len(self.names)}"  # peft adapter names must be identifiers; folders are not
        if not self.names:
            from peft import PeftModel

            self.model = PeftModel.from_pretrained(self.model, str(path), adapter_name=name)
        else:
            self.model.load_adapter(str(path), adapter_name=name)
        self.names[path] = name

    @contextmanager
    def use(self, entry: Entry, role: str) -> Iterator[None]:
        """The model answers as `entry` in `role`: its adapter active, or every adapter disabled for the base."""
        adapter = entry.answer if role == "answer" else entry.diagram
        if adapter is None:
            with self.model.disable_adapter() if self.names else nullcontext():
                yield
            return
        self.model.set_adapter(self.names[adapter])
        yield
