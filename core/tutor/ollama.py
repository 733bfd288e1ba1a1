"""Ollama: a Modelfile whose TEMPLATE renders exactly the prompt the model was trained on, and the check that it does.

The classic failure of an exported fine-tune is a chat template or an
end-of-turn token that differs between training and the exported model: the
model "never stops", or answers garbled. So the Modelfile is written from the
tokenizer's own (Hugging Face, Jinja) chat template, and checked against it:

    family = template_family(tokenizer.chat_template)          # chatml, llama3, gemma, mistral
    text = modelfile("physics-q8_0.gguf", tokenizer.chat_template, [tokenizer.eos_token], system_prompt)
    template = parse_modelfile(text)["template"]                 # the TEMPLATE exactly as Ollama will read it
    problems = check_contract(render, template, golden_conversations(), system_prompt, bos=runtime_bos(family))

`render` is the training side: `lambda m: tokenizer.apply_chat_template(m, tokenize=False, add_generation_prompt=True)`.
`render_go` is the Ollama side: a small Go text/template renderer for exactly
the subset our templates use, fed the way Ollama feeds it (server/routes.go
and template/template.go): the Modelfile's SYSTEM becomes a first system
message when the conversation has none; `.System` is every system message
joined by a blank line; `.Messages` holds every message, system ones
included, with consecutive messages of one role merged.

BOS: llama.cpp (and Ollama's own runner) prepend the BOS token themselves when
the GGUF says so, so our TEMPLATE never writes it; the contract strips it from
the Hugging Face render (`bos=`, see `runtime_bos`). ChatML templates have no
BOS in the text.

Pure Python: no torch, no transformers. Jinja2 (a core dependency) is used
only to probe a chat template for its default system message.
"""

from __future__ import annotations

import json
import re
import unicodedata
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from itertools import zip_longest
from typing import Any

from .errors import TutorError

FAMILIES = ("chatml", "llama3", "gemma", "mistral")
_FAMILY_HELP = ("chatml (<|im_start|>...<|im_end|>: SmolLM2, Qwen), llama3 (<|start_header_id|>...<|eot_id|>), "
                "gemma (<start_of_turn>...<end_of_turn>), mistral ([INST]...[/INST])")

# Every token that ends a generation in each family; the tokenizer's own EOS strings are added to these.
STOPS = {
    "chatml": ["<|im_end|>", "<|endoftext|>"],
    "llama3": ["<|eot_id|>", "<|end_of_text|>"],
    "gemma": ["<end_of_turn>", "<eos>"],
    "mistral": ["</s>"],
}
# The BOS the runtime prepends itself (llama.cpp reads tokenizer.ggml.add_bos_token); never part of a TEMPLATE.
BOS = {"chatml": None, "llama3": "<|begin_of_text|>", "gemma": "<bos>", "mistral": "<s>"}
_EOS = {"chatml": "<|im_end|>", "llama3": "<|eot_id|>", "gemma": "<eos>", "mistral": "</s>"}
# The system turn of families that have one: its opening and its closing text.
_SYSTEM_TURN = {"chatml": ("<|im_start|>system\n", "<|im_end|>\n"),
                "llama3": ("<|start_header_id|>system<|end_header_id|>\n\n", "<|eot_id|>")}


# ---------------------------------------------------------------------------------------------------------------------
# Families, defaults, templates


def template_family(chat_template: str) -> str:
    """The family of a Hugging Face (Jinja) chat template: chatml, llama3, gemma or mistral."""
    text = chat_template or ""
    if "<|im_start|>" in text and "<|im_end|>" in text:
        return "chatml"
    if "<|start_header_id|>" in text and "<|eot_id|>" in text:
        return "llama3"
    if "<start_of_turn>" in text:
        return "gemma"
    if "[INST]" in text and "<<SYS>>" not in text:  # <<SYS>> is Llama 2's format, which we do not write
        return "mistral"
    raise TutorError(f"cannot export this chat template to Ollama: unrecognised family; supported: {_FAMILY_HELP}")


def runtime_bos(family: str) -> str | None:
    """The BOS text a family's Hugging Face template writes but Ollama's runtime adds by itself (None for chatml)."""
    _check_family(family)
    return BOS[family]


def default_system(chat_template: str) -> str | None:
    """What the template's system turn says when the conversation has no system message; None when it writes none.

    SmolLM2: "You are a helpful AI assistant named SmolLM, trained by Hugging Face". Qwen2.5: "You are Qwen, ...".
    Llama 3.1/3.3: the "Cutting Knowledge Date: ...\\nToday Date: ...\\n\\n" preamble alone. Found by rendering the
    template (as transformers does) on a probe conversation, not by reading its source.
    """
    family = template_family(chat_template)
    if family not in _SYSTEM_TURN:
        return None
    opening, closing = _SYSTEM_TURN[family]
    text = _probe(chat_template, family, [{"role": "user", "content": _PROBE_USER}])
    if text is None or not text.startswith(opening):
        return None
    end = text.find(closing, len(opening))
    if end < 0 or _PROBE_USER in text[:end]:
        return None
    return text[len(opening):end]


def system_preamble(chat_template: str) -> str:
    """Text the template writes before a given system message inside the system turn ("" for most templates).

    Llama 3.1/3.3 write "Cutting Knowledge Date: December 2023\\nToday Date: 26 Jul 2024\\n\\n" there. (Llama 3.2
    writes today's date: a TEMPLATE fixes the date of the export, and the contract check tells when that matters.)
    """
    family = template_family(chat_template)
    if family not in _SYSTEM_TURN:
        return ""
    opening, _ = _SYSTEM_TURN[family]
    text = _probe(chat_template, family, [{"role": "system", "content": _PROBE_SYSTEM}, {"role": "user", "content": _PROBE_USER}])
    if text is None or not text.startswith(opening) or _PROBE_SYSTEM not in text:
        return ""
    return text[len(opening):text.index(_PROBE_SYSTEM)]


def template_for(chat_template: str) -> str:
    """The Ollama TEMPLATE for a Hugging Face chat template: its family, default system and preamble detected."""
    family = template_family(chat_template)
    return go_template(family, default_system(chat_template), system_preamble=system_preamble(chat_template))


def go_template(family: str, default_system: str | None = None, *, system_preamble: str = "") -> str:
    """The Ollama TEMPLATE (Go text/template over `.Messages`) rendering what the family's HF template renders.

    For a conversation of system/user/assistant messages, with add_generation_prompt=True and without the BOS
    (see the module's docstring). `default_system`: the system turn written when the conversation has none
    (chatml and llama3; `default_system()` finds it). `system_preamble`: text before a given system message
    (Llama 3.1's dates; `system_preamble()` finds it).
    """
    _check_family(family)
    for name, text in (("default system message", default_system), ("system preamble", system_preamble)):
        if text and "{{" in text:
            raise TutorError(f"the chat template's {name} contains '{{{{', which an Ollama TEMPLATE would read as an action")
    if family in ("gemma", "mistral") and (default_system or system_preamble):
        raise TutorError(f"the {family} TEMPLATE has no system turn to put a default system message or preamble in")
    first_system = '{{ if and (eq $i 0) (eq .Role "system") }}' + system_preamble + "{{ end }}" if system_preamble else ""
    if family == "chatml":
        default = ('\n{{- if and (eq $i 0) (ne .Role "system") }}<|im_start|>system\n' + default_system + "<|im_end|>\n{{ end }}"
                   if default_system is not None else "")
        return ("{{- range $i, $_ := .Messages }}" + default
                + "<|im_start|>{{ .Role }}\n" + first_system + "{{ .Content }}<|im_end|>\n"
                + "{{ end }}<|im_start|>assistant\n")
    if family == "llama3":
        default = ('\n{{- if and (eq $i 0) (ne .Role "system") }}<|start_header_id|>system<|end_header_id|>\n\n'
                   + default_system + "<|eot_id|>{{ end }}" if default_system is not None else "")
        return ("{{- range $i, $_ := .Messages }}" + default
                + "<|start_header_id|>{{ .Role }}<|end_header_id|>\n\n" + first_system + "{{ .Content }}<|eot_id|>\n"
                + "{{- end }}<|start_header_id|>assistant<|end_header_id|>\n\n")
    if family == "gemma":
        # Gemma 3: a system message is the start of the first user turn, then a blank line; system turns do not exist.
        # Roles alternate after it, so the user turn at index 1 is the first one exactly when index 0 is the system.
        return ("{{- range $i, $_ := .Messages }}\n"
                '{{- if eq .Role "user" }}<start_of_turn>user\n'
                "{{ if and $.System (eq $i 1) }}{{ $.System }}\n\n{{ end }}{{ .Content }}<end_of_turn>\n"
                '{{ else if eq .Role "assistant" }}<start_of_turn>model\n'
                "{{ .Content }}<end_of_turn>\n"
                "{{ end }}\n"
                "{{- end }}<start_of_turn>model\n")
    # mistral (v0.3 instruct): the system message opens the last user turn; no generation prompt after [/INST].
    return ("{{- range $i, $_ := .Messages }}\n"
            "{{- $last := eq (len (slice $.Messages $i)) 1 }}\n"
            '{{- if eq .Role "user" }}[INST] {{ if and $.System $last }}{{ $.System }}\n\n{{ end }}{{ .Content }}[/INST]\n'
            '{{- else if eq .Role "assistant" }} {{ .Content }}</s>\n'
            "{{- end }}\n"
            "{{- end }}")


def stop_tokens(family: str, tokenizer_eos: Iterable[str | None]) -> list[str]:
    """Every end-of-generation token of the family, then the tokenizer's own EOS strings: deduplicated, in order."""
    _check_family(family)
    out: list[str] = []
    for token in [*STOPS[family], *tokenizer_eos]:
        if token and token not in out:
            out.append(token)
    return out


def _check_family(family: str) -> None:
    if family not in FAMILIES:
        raise TutorError(f"unknown chat template family {family!r}; supported: {_FAMILY_HELP}")


# ---------------------------------------------------------------------------------------------------------------------
# Probing a Hugging Face template with Jinja, configured as transformers configures it

_PROBE_USER = "tutor-probe-user-7f3a"
_PROBE_SYSTEM = "tutor-probe-system-7f3a"


def _probe(chat_template: str, family: str, messages: list[dict]) -> str | None:
    """The template rendered on `messages` with add_generation_prompt=True, the runtime's BOS removed; None if it refuses."""
    try:
        text = render_jinja(chat_template, messages, bos_token=BOS[family] or "", eos_token=_EOS[family])
    except Exception:  # noqa: BLE001 - a template may refuse a probe (raise_exception); then it has no such default
        return None
    bos = BOS[family]
    return text[len(bos):] if bos and text.startswith(bos) else text


def render_jinja(chat_template: str, messages: list[dict], *, add_generation_prompt: bool = True, **special_tokens: str) -> str:
    """A Hugging Face chat template rendered the way transformers renders it (for probing; tests use the real tokenizer)."""
    return _compiled_jinja(chat_template).render(messages=messages, tools=None, documents=None,
                                                 add_generation_prompt=add_generation_prompt, **special_tokens)


@lru_cache(maxsize=16)
def _compiled_jinja(chat_template: str):
    import jinja2
    from jinja2.ext import Extension, loopcontrols
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    class Generation(Extension):  # {% generation %}...{% endgeneration %}: transformers' assistant-mask tag, rendered through
        tags = {"generation"}

        def parse(self, parser):
            lineno = next(parser.stream).lineno
            body = parser.parse_statements(("name:endgeneration",), drop_needle=True)
            return jinja2.nodes.CallBlock(self.call_method("_through"), [], [], body).set_lineno(lineno)

        def _through(self, caller):
            return caller()

    def raise_exception(message):
        raise jinja2.exceptions.TemplateError(message)

    def tojson(x, ensure_ascii=False, indent=None, separators=None, sort_keys=False):
        return json.dumps(x, ensure_ascii=ensure_ascii, indent=indent, separators=separators, sort_keys=sort_keys)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True, extensions=[Generation, loopcontrols])
    env.filters["tojson"] = tojson
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: datetime.now().strftime(fmt)
    return env.from_string(chat_template)


# ---------------------------------------------------------------------------------------------------------------------
# The Modelfile


def modelfile(gguf_name: str, chat_template: str, eos: Iterable[str | None], system: str | None, *, temperature: float = 0.2,
              top_p: float = 0.9, repeat_penalty: float = 1.1, num_ctx: int = 4096, adapter: str | None = None) -> str:
    """An Ollama Modelfile: FROM the GGUF (or FROM the base GGUF + ADAPTER), TEMPLATE, every stop token, SYSTEM, sampling.

    The text is read back with a port of Ollama's own Modelfile parser; a value that would not come back exactly
    (a system prompt with a line ending in \"\"\", or characters the parser drops) is refused in one line.
    """
    family = template_family(chat_template)
    template = template_for(chat_template)
    stops = stop_tokens(family, eos)
    if not temperature >= 0:
        raise TutorError(f"temperature must be >= 0, not {temperature}")
    if not 0 < top_p <= 1:
        raise TutorError(f"top_p must be in (0, 1], not {top_p}")
    if not repeat_penalty > 0:
        raise TutorError(f"repeat_penalty must be > 0, not {repeat_penalty}")
    if isinstance(num_ctx, bool) or not isinstance(num_ctx, int) or num_ctx < 1:
        raise TutorError(f"num_ctx must be a whole number >= 1, not {num_ctx!r}")
    wanted: list[tuple[str, str, str]] = [("FROM", "model", _local(gguf_name))]  # (keyword, parsed name, value)
    if adapter:
        wanted.append(("ADAPTER", "adapter", _local(adapter)))
    wanted.append(("TEMPLATE", "template", template))
    wanted += [("PARAMETER stop", "stop", stop) for stop in stops]
    wanted += [("PARAMETER temperature", "temperature", _number(temperature)), ("PARAMETER top_p", "top_p", _number(top_p)),
               ("PARAMETER repeat_penalty", "repeat_penalty", _number(repeat_penalty)), ("PARAMETER num_ctx", "num_ctx", str(num_ctx))]
    if system:
        wanted.append(("SYSTEM", "system", system))
    lines = []
    for keyword, name, value in wanted:
        _writable(name, value)
        if name in ("model", "adapter") or keyword.startswith("PARAMETER") and name != "stop":
            lines.append(f"{keyword} {value}")
        elif name == "stop":
            lines.append(f'{keyword} "{value}"')
        else:
            lines.append(f'{keyword} """{value}"""')
    text = "\n".join(lines) + "\n"
    got = parse_modelfile(text)
    expected = [(name, value) for _, name, value in wanted]
    if got != expected:  # a last guard: _writable should have refused whatever gets here
        want, came = next((w, g) for w, g in zip_longest(expected, got, fillvalue=("", "")) if w != g)
        raise TutorError(f"the Modelfile would not read back as written: {want[0] or came[0]} {want[1]!r} came back as {came[1]!r}")
    return text


def _local(path: str) -> str:
    path = str(path)
    return path if path.startswith(("/", "./", "../", "~")) else f"./{path}"


def _number(x: float) -> str:
    return str(int(x)) if float(x).is_integer() and not isinstance(x, float) else repr(float(x))


_WHAT = {"model": "the GGUF file name", "adapter": "the adapter file name", "template": "the TEMPLATE", "system": "the system prompt",
         "stop": "a stop token"}


def _writable(name: str, value: str) -> None:
    """Refuse, in one line, a value Ollama's parser would not read back exactly."""
    what = _WHAT.get(name, f"PARAMETER {name}")
    if not value:
        raise TutorError(f"{what} is empty")
    for ch in value:
        if ch not in "\n\r\t" and not _go_is_print(ch):
            raise TutorError(f"{what} contains {unicodedata.name(ch, 'a control character')} (U+{ord(ch):04X}), "
                             "which Ollama's Modelfile parser silently drops; remove it")
    if name not in ("template", "system"):
        if any(c in value for c in "\r\n") or value != value.strip() or '"' in value:
            raise TutorError(f"{what} {value!r} cannot be written on one Modelfile line (newline, quote or surrounding space)")
        return
    lines = re.split(r"\r\n|\r|\n", value)
    for number, line in enumerate(lines[:-1], 1):
        if line.rstrip(" \t").endswith('"""'):
            raise TutorError(f'{what}: line {number} ends with """, which Ollama reads as the end of the text '
                             f"(a Modelfile has no escape for it); reword that line: {line.strip()[:60]!r}")


def _go_is_print(ch: str) -> bool:
    """Go's strconv.IsPrint: letters, marks, numbers, punctuation, symbols and the ASCII space."""
    return ch == " " or unicodedata.category(ch)[0] in "LMNPS"


def parse_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, value) pairs, read exactly as Ollama's parser (parser/parser.go, ParseFile) reads them.

    Commands: "model" (FROM), "adapter", "template", "system", "license", "message" ("role: text") and one per
    PARAMETER, named by the parameter ("stop", "temperature"...). Parse errors are TutorErrors.
    """
    commands: list[tuple[str, str]] = []
    state, buf, command, role, line = _NIL, "", "", "", 1
    if text.startswith("\ufeff"):
        text = text[1:]
    for ch in text:
        if ch in "\r\n":
            line += 1
        nxt, keep, error = _next_state(ch, state)
        if error:
            raise TutorError(f"Modelfile line {line}: {error}")
        if nxt != state:
            if state == _NAME:
                word = buf.lower()
                if word not in ("from", "license", "template", "system", "adapter", "draft", "renderer", "parser", "parameter",
                                "message", "requires"):
                    raise TutorError(f"Modelfile line {line}: unknown command {buf!r}")
                if word == "from":
                    command = "model"
                elif word == "parameter":
                    nxt = _PARAMETER
                elif word == "message":
                    nxt, command = _MESSAGE, word
                else:
                    command = word
            elif state == _PARAMETER:
                command = buf
            elif state == _MESSAGE:
                if buf not in ("system", "user", "assistant"):
                    raise TutorError(f"Modelfile line {line}: invalid message role {buf!r}")
                role = buf
            elif state == _VALUE:
                unquoted, ok = _unquote(buf.strip(_SPACE))
                if not ok or ch in " \t":  # a value ends only at a newline where it is complete
                    buf += ch
                    continue
                if role:
                    unquoted, role = f"{role}: {unquoted}", ""
                commands.append((command, unquoted))
            buf, state = "", nxt
        if keep and _go_is_print(ch):  # Ollama keeps only printable runes (newlines and tabs inside values come above)
            buf += ch
    if state == _VALUE:
        unquoted, ok = _unquote(buf.strip(_SPACE))
        if not ok:
            raise TutorError(f"Modelfile: unexpected end of file in {buf[:40]!r}")
        commands.append((command, f"{role}: {unquoted}" if role else unquoted))
    elif state not in (_NIL, _COMMENT):
        raise TutorError("Modelfile: unexpected end of file")
    if not any(c == "model" for c, _ in commands):
        raise TutorError("Modelfile: no FROM line")
    return commands


_NIL, _NAME, _VALUE, _PARAMETER, _MESSAGE, _COMMENT = range(6)


def _next_state(ch: str, state: int) -> tuple[int, bool, str | None]:
    """parseRuneForState: the next state, whether the rune is kept (Go returns it, not 0), an error."""
    space, newline = ch in " \t", ch in "\r\n"
    alpha = ch.isascii() and ch.isalpha()
    if state == _NIL:
        return (_COMMENT, False, None) if ch == "#" else (_NIL, False, None) if space or newline else (_NAME, True, None)
    if state == _NAME:
        return (_NAME, True, None) if alpha else (_VALUE, False, None) if space else (_NIL, False, "invalid command")
    if state == _VALUE:
        return (_NIL, True, None) if space or newline else (_VALUE, True, None)
    if state == _PARAMETER:
        if alpha or ch.isascii() and ch.isdigit() or ch == "_":
            return _PARAMETER, True, None
        return (_VALUE, False, None) if space else (_NIL, False, "unexpected EOF")
    if state == _MESSAGE:
        return (_MESSAGE, True, None) if alpha else (_VALUE, False, None) if space else (_NIL, False, "unexpected EOF")
    return (_NIL, False, None) if newline else (_COMMENT, False, None)


def _unquote(s: str) -> tuple[str, bool]:
    if s.startswith('"""'):
        return (s[3:-3], True) if len(s) >= 6 and s.endswith('"""') else ("", False)
    if s.startswith('"'):
        return (s[1:-1], True) if len(s) >= 2 and s.endswith('"') else ("", False)
    return s, True


# ---------------------------------------------------------------------------------------------------------------------
# Golden conversations and the contract


def golden_conversations() -> list[list[dict[str, str]]]:
    """Conversations every exported template must render like the training template (each ends with a user turn)."""
    system = "You are an expert physics teacher. Answer the way a top mark scheme expects."
    return [
        [{"role": "system", "content": system}, {"role": "user", "content": "State Newton's second law and give its units."}],
        [{"role": "user", "content": "What is the SI unit of force?"}],
        [{"role": "system", "content": system}, {"role": "user", "content": "Define momentum."},
         {"role": "assistant", "content": "Momentum is mass times velocity, p = mv, measured in kg m s^-1."},
         {"role": "user", "content": "Is it a vector?"}],
        [{"role": "system", "content": system},
         {"role": "user", "content": "A block rests on a rough slope inclined at 30 degrees. Show the forces on it."},
         {"role": "assistant", "content": "(DIAGRAM: a force diagram of a block on a slope)\nWeight mg acts vertically down; "
                                          "the normal reaction R acts perpendicular to the slope; friction F acts up the slope."},
         {"role": "user", "content": "Now resolve the weight along the slope."}],
        [{"role": "system", "content": system},
         {"role": "user", "content": "Δv = 3 m s⁻¹, θ = 30°, ½mv², 水: what is the kinetic energy?"}],
        [{"role": "user", "content": "Why does {{ .System }} {% if %} appear in my notes? {{- end }} {# x #}"},
         {"role": "assistant", "content": "That is template syntax: {{ .Content }} and {% endif %} are not physics."},
         {"role": "user", "content": "Then explain {{ $.Messages }} and <|im_start|>, please."}],
    ]


def ollama_messages(messages: Sequence[dict], system: str | None) -> list[dict]:
    """The conversation Ollama renders: the Modelfile's SYSTEM first when the conversation has no system message first."""
    out = [dict(m) for m in messages]
    if system and out and out[0].get("role") != "system":
        out.insert(0, {"role": "system", "content": system})
    return out


def check_contract(chat_template_render: Callable[[list[dict]], str], template: str, conversations: Iterable[Sequence[dict]],
                   system: str | None, *, bos: str | None = None) -> list[str]:
    """One line per golden conversation the Ollama TEMPLATE renders differently from the training template; [] when all agree.

    `chat_template_render(messages)` renders with the training template, add_generation_prompt=True. Each conversation
    is what a user sends; with a Modelfile SYSTEM (`system`) Ollama puts it first when the conversation has no system
    message, and the training template is given that same conversation. `bos`: the BOS the runtime adds itself
    (`runtime_bos(family)`), stripped from the training render before comparing.
    """
    try:
        _parse_go(template)
    except TutorError as err:
        return [f"the TEMPLATE cannot be rendered: {err}"]
    problems = []
    for n, conversation in enumerate(conversations, 1):
        try:
            want = chat_template_render(ollama_messages(conversation, system))
        except Exception as err:  # noqa: BLE001 - the training template refusing a conversation is a finding, not a crash
            problems.append(f"conversation {n}: the training chat template refuses it: {err}")
            continue
        if bos and want.startswith(bos):
            want = want[len(bos):]
        try:
            got = render_go(template, conversation, system)
        except TutorError as err:
            problems.append(f"conversation {n}: the TEMPLATE fails on it: {err}")
            continue
        if got != want:
            problems.append(f"conversation {n}: {first_difference(want, got)}")
    return problems


def first_difference(want: str, got: str, context: int = 24) -> str:
    """Where two renders first differ, with a little context of each (repr)."""
    at = next((i for i, (a, b) in enumerate(zip(want, got)) if a != b), min(len(want), len(got)))
    start = max(0, at - context)
    return (f"differs at character {at} of {len(want)}: training {want[start:at + context]!r} "
            f"vs Ollama {got[start:at + context]!r}")


# ---------------------------------------------------------------------------------------------------------------------
# A Go text/template renderer for the subset our templates use

_FUNCS = ("eq", "ne", "and", "or", "not", "len", "slice")
_ROOT_FIELDS = ("System", "Messages", "Response")
_MESSAGE_FIELDS = ("Role", "Content")
_SPACE = " \t\r\n"


class _Struct(dict):
    """A Go struct (an api.Message): always true, fields by name."""


def render_go(template: str, messages: Sequence[dict], system: str | None = None) -> str:
    """Render an Ollama TEMPLATE for a chat as Ollama does; refuses (TutorError) anything outside our subset.

    Subset: {{ }} actions with - trimming; if / else / else if / end; range (over .Messages, with `$i, $_ :=`,
    `$m :=` or none); .Role .Content of a message, .System .Messages .Response of the root, $ and $.Field;
    eq ne and or not len slice; `$x := pipeline`; string and integer literals, true, false; parentheses.
    """
    system_texts, collated = [], []
    for m in ollama_messages(messages, system):
        role, content = m.get("role"), m.get("content")
        if not isinstance(role, str) or not isinstance(content, str):
            raise TutorError(f"a message needs a string role and content, not {m!r}")
        if role == "system":
            system_texts.append(content)
        if collated and collated[-1]["Role"] == role and role != "tool":  # Ollama merges consecutive messages of one role
            collated[-1]["Content"] += "\n\n" + content
        else:
            collated.append(_Struct(Role=role, Content=content))
    root = {"System": "\n\n".join(system_texts), "Messages": collated, "Response": ""}
    out: list[str] = []
    _execute(_parse_go(template), root, [{"$": root}], root, out)
    return "".join(out)


@dataclass
class _Tok:
    kind: str  # str num bool var field dot ident ( ) , := = |
    value: Any
    fields: tuple[str, ...] = ()


@dataclass
class _Action:
    tokens: list[_Tok]
    where: str


def _where(template: str, offset: int) -> str:
    line = template.count("\n", 0, offset) + 1
    return f"line {line}, {template[offset:offset + 30]!r}"


def _lex_go(template: str) -> list[str | _Action]:
    """Text pieces and actions, with the trim markers already applied to the text."""
    pieces: list[str | _Action] = []
    pos, trim_next = 0, False
    while True:
        start = template.find("{{", pos)
        text = template[pos:] if start < 0 else template[pos:start]
        if trim_next:
            text = text.lstrip(_SPACE)
        if start < 0:
            pieces.append(text)
            return pieces
        i = start + 2
        if template.startswith("-", i) and i + 1 < len(template) and template[i + 1] in _SPACE:
            text, i = text.rstrip(_SPACE), i + 2
        pieces.append(text)
        if template.startswith("/*", i):
            raise TutorError(f"comments are outside the supported subset ({_where(template, start)})")
        tokens, pos, trim_next = _lex_action(template, i, start)
        pieces.append(_Action(tokens, _where(template, start)))


def _lex_action(template: str, i: int, start: int) -> tuple[list[_Tok], int, bool]:
    tokens: list[_Tok] = []
    n = len(template)
    while True:
        if i >= n:
            raise TutorError(f"unclosed action ({_where(template, start)})")
        ch = template[i]
        if ch in _SPACE:
            if template.startswith("-}}", i + 1):
                return tokens, i + 4, True
            i += 1
        elif template.startswith("}}", i):
            return tokens, i + 2, False
        elif ch in "(),|":
            tokens.append(_Tok(ch, ch))
            i += 1
        elif template.startswith(":=", i):
            tokens.append(_Tok(":=", ":="))
            i += 2
        elif ch == "=":
            tokens.append(_Tok("=", "="))
            i += 1
        elif ch == '"':
            j, chars = i + 1, []
            while j < n and template[j] != '"':
                if template[j] == "\n":
                    raise TutorError(f"newline in a string literal ({_where(template, start)})")
                if template[j] == "\\":
                    escape = template[j + 1:j + 2]
                    if escape not in _ESCAPES:
                        raise TutorError(f"string escape \\{escape} is outside the supported subset ({_where(template, start)})")
                    chars.append(_ESCAPES[escape])
                    j += 2
                else:
                    chars.append(template[j])
                    j += 1
            if j >= n:
                raise TutorError(f"unterminated string ({_where(template, start)})")
            tokens.append(_Tok("str", "".join(chars)))
            i = j + 1
        elif ch == "`":
            j = template.find("`", i + 1)
            if j < 0:
                raise TutorError(f"unterminated raw string ({_where(template, start)})")
            tokens.append(_Tok("str", template[i + 1:j]))
            i = j + 1
        elif ch.isdigit() or ch == "-" and template[i + 1:i + 2].isdigit():
            m = re.compile(r"-?\d+").match(template, i)
            if template[m.end():m.end() + 1] in (".", "e", "E", "x", "_"):
                raise TutorError(f"only integer numbers are in the supported subset ({_where(template, start)})")
            tokens.append(_Tok("num", int(m.group())))
            i = m.end()
        elif ch == "$":
            m = re.compile(r"\$\w*").match(template, i)
            i = m.end()
            fields, i = _lex_fields(template, i)
            tokens.append(_Tok("var", m.group(), fields))
        elif ch == ".":
            fields, i = _lex_fields(template, i)
            tokens.append(_Tok("field", None, fields) if fields else _Tok("dot", "."))
            if not fields:
                i += 1
        elif ch.isalpha() or ch == "_":
            m = re.compile(r"\w+").match(template, i)
            word = m.group()
            i = m.end()
            if word in ("true", "false"):
                tokens.append(_Tok("bool", word == "true"))
            else:
                tokens.append(_Tok("ident", word))
        else:
            raise TutorError(f"unexpected {ch!r} in an action ({_where(template, start)})")


_ESCAPES = {'"': '"', "\\": "\\", "n": "\n", "t": "\t", "r": "\r"}


def _lex_fields(template: str, i: int) -> tuple[tuple[str, ...], int]:
    fields = []
    while True:
        m = re.compile(r"\.([A-Za-z_]\w*)").match(template, i)
        if not m:
            return tuple(fields), i
        fields.append(m.group(1))
        i = m.end()


# Parsed nodes: str (text), ("print", pipe, where), ("if", [(pipe, body)...], else_body), ("range", vars, pipe, body, else_body)
# A pipe: (declared variable names, command); a command: list of operands; an operand: _Tok or ("pipe", pipe).


@lru_cache(maxsize=64)
def _parse_go(template: str) -> tuple:
    pieces = _lex_go(template)
    body, end, stop = _parse_list(pieces, 0, ())
    if stop is not None:
        raise TutorError(f"{{{{ {stop[0]} }}}} without a matching if or range ({stop[1].where})")
    return tuple(body)


def _parse_list(pieces: list, i: int, closers: tuple[str, ...]) -> tuple[list, int, tuple[str, _Action] | None]:
    """Nodes until one of `closers` (end, else) at this level; returns (nodes, index after it, (closer, action))."""
    nodes: list = []
    while i < len(pieces):
        piece = pieces[i]
        i += 1
        if isinstance(piece, str):
            if piece:
                nodes.append(piece)
            continue
        tokens, where = piece.tokens, piece.where
        if not tokens:
            raise TutorError(f"empty action ({where})")
        head = tokens[0]
        keyword = head.value if head.kind == "ident" else None
        if keyword in ("end", "else"):
            if keyword not in closers:
                raise TutorError(f"unexpected {{{{ {keyword} }}}} ({where})")
            return nodes, i, (keyword, piece)
        if keyword == "if":
            node, i = _parse_if(pieces, i, tokens[1:], where)
            nodes.append(node)
        elif keyword == "range":
            names, pipe = _parse_range_head(tokens[1:], where)
            body, i, stop = _parse_list(pieces, i, ("end", "else"))
            if stop is None:
                raise TutorError(f"range without end ({where})")
            else_body: list = []
            if stop[0] == "else":
                if len(stop[1].tokens) != 1:
                    raise TutorError(f"else if inside range is outside the supported subset ({stop[1].where})")
                else_body, i, stop = _parse_list(pieces, i, ("end",))
                if stop is None:
                    raise TutorError(f"range without end ({where})")
            _no_args(stop[1])
            nodes.append(("range", names, pipe, body, else_body))
        elif keyword in ("with", "define", "template", "block", "break", "continue", "nil"):
            raise TutorError(f"{{{{ {keyword} }}}} is outside the supported subset ({where})")
        else:
            nodes.append(("print", _parse_pipe(tokens, where, allow_decl=True), where))
    return nodes, i, None


def _no_args(action: _Action) -> None:
    if len(action.tokens) != 1:
        raise TutorError(f"unexpected words after {action.tokens[0].value} ({action.where})")


def _parse_if(pieces: list, i: int, tokens: list[_Tok], where: str) -> tuple[tuple, int]:
    branches = [(_parse_pipe(tokens, where, allow_decl=False), None)]
    else_body: list = []
    while True:
        body, i, stop = _parse_list(pieces, i, ("end", "else"))
        if stop is None:
            raise TutorError(f"if without end ({where})")
        branches[-1] = (branches[-1][0], body)
        closer, action = stop
        if closer == "end":
            _no_args(action)
            return ("if", branches, else_body), i
        rest = action.tokens[1:]
        if not rest:
            else_body, i, stop = _parse_list(pieces, i, ("end",))
            if stop is None:
                raise TutorError(f"if without end ({where})")
            _no_args(stop[1])
            return ("if", branches, else_body), i
        if rest[0].kind != "ident" or rest[0].value != "if":
            raise TutorError(f"else {rest[0].value} is outside the supported subset ({action.where})")
        branches.append((_parse_pipe(rest[1:], action.where, allow_decl=False), None))


def _parse_range_head(tokens: list[_Tok], where: str) -> tuple[list[str], tuple]:
    names: list[str] = []
    if any(t.kind == ":=" for t in tokens):
        k = next(j for j, t in enumerate(tokens) if t.kind == ":=")
        decl = tokens[:k]
        if len(decl) == 1 and decl[0].kind == "var" and not decl[0].fields:
            names = [decl[0].value]
        elif len(decl) == 3 and decl[1].kind == "," and all(t.kind == "var" and not t.fields for t in (decl[0], decl[2])):
            names = [decl[0].value, decl[2].value]
        else:
            raise TutorError(f"a range declares `$e :=` or `$i, $e :=` ({where})")
        tokens = tokens[k + 1:]
    return names, _parse_pipe(tokens, where, allow_decl=False)


def _parse_pipe(tokens: list[_Tok], where: str, *, allow_decl: bool) -> tuple:
    names: list[str] = []
    if len(tokens) >= 2 and tokens[0].kind == "var" and tokens[1].kind in (":=", "="):
        if tokens[1].kind == "=":
            raise TutorError(f"assigning an existing variable (=) is outside the supported subset; declare with := ({where})")
        if not allow_decl or tokens[0].fields or tokens[0].value == "$":
            raise TutorError(f"a declaration is allowed only as `{{{{ $x := ... }}}}` ({where})")
        names, tokens = [tokens[0].value], tokens[2:]
    operands, rest = _parse_command(tokens, where)
    if rest:
        raise TutorError(f"unexpected {rest[0].value!r}: pipes and the like are outside the supported subset ({where})")
    return names, operands


def _parse_command(tokens: list[_Tok], where: str) -> tuple[list, list[_Tok]]:
    operands: list = []
    i = 0
    while i < len(tokens):
        t = tokens[i]
        if t.kind in (")", "|", ",", ":=", "="):
            break
        if t.kind == "(":
            inner, rest = _parse_command(tokens[i + 1:], where)
            if not rest or rest[0].kind != ")":
                raise TutorError(f"unclosed parenthesis ({where})")
            if not inner:
                raise TutorError(f"empty parentheses ({where})")
            operands.append(("pipe", ([], inner)))
            i = len(tokens) - len(rest) + 1
            continue
        if t.kind == "ident":
            if t.value not in _FUNCS:
                raise TutorError(f"function {t.value!r} is outside the supported subset ({', '.join(_FUNCS)}) ({where})")
            if operands:
                raise TutorError(f"{t.value} as an argument needs parentheses ({where})")
        operands.append(t)
        i += 1
    if not operands:
        raise TutorError(f"missing value ({where})")
    if len(operands) > 1 and not (isinstance(operands[0], _Tok) and operands[0].kind == "ident"):
        raise TutorError(f"arguments given to a value that is not a function ({where})")
    return operands, tokens[i:]


def _execute(nodes, dot, scopes: list[dict], root, out: list[str]) -> None:
    for node in nodes:
        if isinstance(node, str):
            out.append(node)
        elif node[0] == "print":
            _, (names, command), where = node
            value = _call(command, dot, scopes, where)
            if names:
                scopes[-1][names[0]] = value
            else:
                out.append(_printed(value, where))
        elif node[0] == "if":
            _, branches, else_body = node
            for (_, command), body in branches:
                if _truth(_call(command, dot, scopes, "if")):
                    _execute(body, dot, [*scopes, {}], root, out)
                    break
            else:
                _execute(else_body, dot, [*scopes, {}], root, out)
        else:
            _, names, (_, command), body, else_body = node
            items = _call(command, dot, scopes, "range")
            if not isinstance(items, list):
                raise TutorError(f"range over {type(items).__name__} is outside the supported subset")
            for index, item in enumerate(items):
                scope = {}
                if len(names) == 2:
                    scope = {names[0]: index, names[1]: item}
                elif names:
                    scope = {names[0]: item}
                _execute(body, item, [*scopes, scope], root, out)
            if not items:
                _execute(else_body, dot, [*scopes, {}], root, out)


def _call(operands: list, dot, scopes: list[dict], where: str):
    head = operands[0]
    if isinstance(head, _Tok) and head.kind == "ident":
        return _function(head.value, operands[1:], dot, scopes, where)
    return _value(head, dot, scopes, where)


def _value(operand, dot, scopes: list[dict], where: str):
    if isinstance(operand, tuple):
        return _call(operand[1][1], dot, scopes, where)
    kind = operand.kind
    if kind in ("str", "num", "bool"):
        return operand.value
    if kind == "dot":
        return dot
    if kind == "var":
        for scope in reversed(scopes):
            if operand.value in scope:
                return _fields(scope[operand.value], operand.fields, where)
        raise TutorError(f"undefined variable {operand.value} ({where})")
    if kind == "field":
        return _fields(dot, operand.fields, where)
    raise TutorError(f"{operand.value!r} is outside the supported subset ({where})")


def _fields(value, fields: tuple[str, ...], where: str):
    for name in fields:
        allowed = _MESSAGE_FIELDS if isinstance(value, _Struct) else _ROOT_FIELDS if isinstance(value, dict) else ()
        if name not in allowed:
            owner = "a message" if isinstance(value, _Struct) else "the root" if isinstance(value, dict) else type(value).__name__
            raise TutorError(f"field .{name} of {owner} is outside the supported subset ({where})")
        value = value[name]
    return value


def _function(name: str, args: list, dot, scopes: list[dict], where: str):
    def arg(k):
        return _value(args[k], dot, scopes, where)

    def need(low, high=None):
        if not low <= len(args) <= (high if high is not None else low):
            raise TutorError(f"wrong number of arguments to {name}: {len(args)} ({where})")

    if name in ("and", "or"):
        need(1, 99)
        value = None
        for k in range(len(args)):  # short-circuit, as Go 1.18+
            value = arg(k)
            if _truth(value) != (name == "and"):
                return value
        return value
    if name == "not":
        need(1)
        return not _truth(arg(0))
    if name == "len":
        need(1)
        value = arg(0)
        if isinstance(value, str):
            return len(value.encode("utf-8"))  # Go: bytes
        if isinstance(value, list):
            return len(value)
        raise TutorError(f"len of {type(value).__name__} is outside the supported subset ({where})")
    if name == "slice":
        need(1, 3)
        value, bounds = arg(0), [arg(k) for k in range(1, len(args))]
        if not isinstance(value, list) or not all(isinstance(b, int) and not isinstance(b, bool) for b in bounds) or len(bounds) > 2:
            raise TutorError(f"slice is supported on .Messages with one or two integer indexes ({where})")
        low, high = (bounds + [0, len(value)])[0], (bounds[1] if len(bounds) == 2 else len(value))
        if not 0 <= low <= high <= len(value):
            raise TutorError(f"slice index out of range: {bounds} of {len(value)} ({where})")
        return value[low:high]
    # eq, ne: basic values of one kind
    need(2, 99 if name == "eq" else 2)
    first = arg(0)
    for k in range(1, len(args)):
        other = arg(k)
        if _kind(first) != _kind(other):
            raise TutorError(f"{name}: incompatible types for comparison: {_kind(first)} and {_kind(other)} ({where})")
        if first == other:
            return name == "eq"
    return name == "ne"


def _kind(value) -> str:
    if isinstance(value, bool):
        return "bool"
    if isinstance(value, int):
        return "int"
    if isinstance(value, str):
        return "string"
    raise TutorError(f"comparing {type(value).__name__} values is outside the supported subset")


def _truth(value) -> bool:
    if isinstance(value, _Struct):
        return True
    if value is None:
        return False
    if isinstance(value, bool | int | str | list | dict):
        return bool(value)
    raise TutorError(f"the truth of {type(value).__name__} is outside the supported subset")


def _printed(value, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | str):
        return str(value)
    raise TutorError(f"printing {type(value).__name__ if value is not None else 'nil'} is outside the supported subset ({where})")
