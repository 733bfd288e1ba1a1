"""The Ollama Modelfile: its TEMPLATE renders exactly what the training chat template renders, and it stops.

ChatML is checked against the real SmolLM2-135M tokenizer (the embedded default). Llama 3, Gemma 3 and
Mistral v0.3 are checked against their chat templates rendered by transformers itself (through the SmolLM2
tokenizer's apply_chat_template with `chat_template=`): Llama 3's verbatim, the others abridged to their
non-tool branches. Llama 3 is also checked against a string written by hand from Meta's documented format.
Where Go is installed, one test runs every TEMPLATE through Go's own text/template, fed as Ollama feeds it.
"""

import json
import shutil
import subprocess
import sys
import textwrap

import pytest
from tutor import ollama
from tutor.errors import TutorError

PHYSICS = "You are an expert physics teacher."

# meta-llama/Meta-Llama-3-8B-Instruct, verbatim.
LLAMA3 = ("{% set loop_messages = messages %}{% for message in loop_messages %}{% set content = '<|start_header_id|>' + message['role'] + "
          "'<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' %}{% if loop.index0 == 0 %}{% set content = bos_token + "
          "content %}{% endif %}{{ content }}{% endfor %}{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>"
          "\\n\\n' }}{% endif %}")

# Llama 3.1 / 3.3 Instruct, abridged: the tool-calling branches removed.
LLAMA31 = """{{- bos_token }}
{%- if not date_string is defined %}
    {%- set date_string = "26 Jul 2024" %}
{%- endif %}
{%- if messages[0]['role'] == 'system' %}
    {%- set system_message = messages[0]['content']|trim %}
    {%- set messages = messages[1:] %}
{%- else %}
    {%- set system_message = "" %}
{%- endif %}
{{- "<|start_header_id|>system<|end_header_id|>\\n\\n" }}
{{- "Cutting Knowledge Date: December 2023\\n" }}
{{- "Today Date: " + date_string + "\\n\\n" }}
{{- system_message }}
{{- "<|eot_id|>" }}
{%- for message in messages %}
    {{- '<|start_header_id|>' + message['role'] + '<|end_header_id|>\\n\\n'+ message['content'] | trim + '<|eot_id|>' }}
{%- endfor %}
{%- if add_generation_prompt %}
    {{- '<|start_header_id|>assistant<|end_header_id|>\\n\\n' }}
{%- endif %}
"""

# google/gemma-3-*-it, verbatim but for one line: the system message's content as a string only.
GEMMA3 = """{{ bos_token }}
{%- if messages[0]['role'] == 'system' -%}
    {%- set first_user_prefix = messages[0]['content'] + '\n\n' -%}
    {%- set loop_messages = messages[1:] -%}
{%- else -%}
    {%- set first_user_prefix = "" -%}
    {%- set loop_messages = messages -%}
{%- endif -%}
{%- for message in loop_messages -%}
    {%- if (message['role'] == 'user') != (loop.index0 % 2 == 0) -%}
        {{ raise_exception("Conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif -%}
    {%- if (message['role'] == 'assistant') -%}
        {%- set role = "model" -%}
    {%- else -%}
        {%- set role = message['role'] -%}
    {%- endif -%}
    {{ '<start_of_turn>' + role + '\n' + (first_user_prefix if loop.first else "") }}
    {%- if message['content'] is string -%}
        {{ message['content'] | trim }}
    {%- elif message['content'] is iterable -%}
        {%- for item in message['content'] -%}
            {%- if item['type'] == 'image' -%}
                {{ '<start_of_image>' }}
            {%- elif item['type'] == 'text' -%}
                {{ item['text'] | trim }}
            {%- endif -%}
        {%- endfor -%}
    {%- else -%}
        {{ raise_exception("Invalid content type") }}
    {%- endif -%}
    {{ '<end_of_turn>\n' }}
{%- endfor -%}
{%- if add_generation_prompt -%}
    {{'<start_of_turn>model\n'}}
{%- endif -%}
"""

# mistralai/Mistral-7B-Instruct-v0.3, abridged: the tool branches removed.
MISTRAL = """{%- if messages[0]["role"] == "system" %}
    {%- set system_message = messages[0]["content"] %}
    {%- set loop_messages = messages[1:] %}
{%- else %}
    {%- set loop_messages = messages %}
{%- endif %}
{%- for message in loop_messages %}
    {%- if (message["role"] == "user") != (loop.index0 % 2 == 0) %}
        {{- raise_exception("After the optional system message, conversation roles must alternate user/assistant/user/assistant/...") }}
    {%- endif %}
{%- endfor %}
{{- bos_token }}
{%- for message in loop_messages %}
    {%- if message["role"] == "user" %}
        {%- if loop.last and system_message is defined %}
            {{- "[INST] " + system_message + "\\n\\n" + message["content"] + "[/INST]" }}
        {%- else %}
            {{- "[INST] " + message["content"] + "[/INST]" }}
        {%- endif %}
    {%- elif message["role"] == "assistant" %}
        {{- " " + message["content"]|trim + eos_token}}
    {%- else %}
        {{- raise_exception("Only user and assistant roles are supported, with the exception of an initial optional system message!") }}
    {%- endif %}
{%- endfor %}
"""

# Gemma 2: refuses system messages outright.
GEMMA2 = ("{{ bos_token }}{% if messages[0]['role'] == 'system' %}{{ raise_exception('System role not supported') }}{% endif %}"
          "{% for message in messages %}{% if (message['role'] == 'assistant') %}{% set role = 'model' %}{% else %}"
          "{% set role = message['role'] %}{% endif %}"
          "{{ '<start_of_turn>' + role + '\\n' + message['content'] | trim + '<end_of_turn>\\n' }}"
          "{% endfor %}{% if add_generation_prompt %}{{'<start_of_turn>model\\n'}}{% endif %}")

TOKENS = {"llama3": ("<|begin_of_text|>", "<|eot_id|>"), "gemma": ("<bos>", "<eos>"), "mistral": ("<s>", "</s>")}


@pytest.fixture(scope="module")
def smollm2():
    from tutor.basemodels import load_tokenizer, resolve
    from tutor.config import ModelConfig

    tokenizer = load_tokenizer(ModelConfig().base, say=lambda _: None)
    assert resolve(ModelConfig().base, materialise=False).name == "smollm2-135m"
    return tokenizer


def hf_render(tokenizer, chat_template=None, **special):
    """The training side: transformers' own chat-template rendering, add_generation_prompt=True."""
    def render(messages):
        return tokenizer.apply_chat_template(messages, chat_template=chat_template, tokenize=False, add_generation_prompt=True, **special)

    return render


def other_family(tokenizer, family, jinja):
    bos, eos = TOKENS[family]
    return hf_render(tokenizer, jinja, bos_token=bos, eos_token=eos)


# ---------------------------------------------------------------------------------------------------------------------
# ChatML: SmolLM2's real template


def test_smollm2_is_chatml_with_its_default_system_message(smollm2):
    template = smollm2.chat_template
    assert ollama.template_family(template) == "chatml"
    assert ollama.default_system(template) == "You are a helpful AI assistant named SmolLM, trained by Hugging Face"
    assert ollama.system_preamble(template) == ""
    assert ollama.runtime_bos("chatml") is None
    go = ollama.template_for(template)
    assert go == ollama.go_template("chatml", ollama.default_system(template))
    assert go.startswith("{{- range $i, $_ := .Messages }}") and "You are a helpful AI assistant named SmolLM" in go


@pytest.mark.parametrize("system", [None, PHYSICS], ids=["no-SYSTEM", "SYSTEM"])
def test_the_contract_holds_for_every_golden_conversation_with_smollm2(smollm2, system):
    template = ollama.template_for(smollm2.chat_template)
    conversations = ollama.golden_conversations()
    assert ollama.check_contract(hf_render(smollm2), template, conversations, system) == []
    # and the renders really are the training prompts, e.g. the default system message when there is none
    user_only = ollama.render_go(template, conversations[1], system)
    assert user_only == hf_render(smollm2)(ollama.ollama_messages(conversations[1], system))
    if system is None:
        assert user_only.startswith("<|im_start|>system\nYou are a helpful AI assistant named SmolLM, trained by Hugging Face<|im_end|>\n")
    else:
        assert user_only.startswith(f"<|im_start|>system\n{PHYSICS}<|im_end|>\n<|im_start|>user\n")
    assert user_only.endswith("<|im_end|>\n<|im_start|>assistant\n")


def test_the_modelfile_s_own_template_passes_the_contract(smollm2):
    text = ollama.modelfile("physics-q8_0.gguf", smollm2.chat_template, [smollm2.eos_token], PHYSICS)
    read = ollama.parse_modelfile(text)
    template = dict(read)["template"]
    assert template == ollama.template_for(smollm2.chat_template)
    assert ollama.check_contract(hf_render(smollm2), template, ollama.golden_conversations(), dict(read)["system"]) == []


def test_a_wrong_template_is_reported_with_the_position_of_the_first_difference(smollm2):
    right = ollama.template_for(smollm2.chat_template)
    wrong = right.replace("{{ .Content }}<|im_end|>\n", "{{ .Content }}<|im_end|>")  # a missing newline after each turn
    assert wrong != right
    conversations = ollama.golden_conversations()
    problems = ollama.check_contract(hf_render(smollm2), wrong, conversations, None)
    assert len(problems) == len(conversations)
    want = hf_render(smollm2)(conversations[0])
    at = want.index("<|im_end|>\n", want.index("<|im_start|>system")) + len("<|im_end|>")
    assert problems[0].startswith(f"conversation 1: differs at character {at} of {len(want)}: training ")
    assert "<|im_end|>\\n<|im_start|>user" in problems[0].split("vs Ollama ")[0]
    assert "<|im_end|><|im_start|>user" in problems[0].split("vs Ollama ")[1]
    assert all("\n" not in p for p in problems)
    # a TEMPLATE that cannot even be rendered is one line, not one per conversation
    assert ollama.check_contract(hf_render(smollm2), right + "{{ end }}", conversations, None) == [
        "the TEMPLATE cannot be rendered: unexpected {{ end }} (line 7, '{{ end }}')"]


def test_stop_tokens_cover_every_end_of_generation_token():
    assert ollama.stop_tokens("chatml", ["<|im_end|>"]) == ["<|im_end|>", "<|endoftext|>"]
    assert ollama.stop_tokens("chatml", ["<|endoftext|>", "<extra>", None, "", "<extra>"]) == ["<|im_end|>", "<|endoftext|>", "<extra>"]
    assert ollama.stop_tokens("llama3", ["<|eot_id|>", "<|eom_id|>"]) == ["<|eot_id|>", "<|end_of_text|>", "<|eom_id|>"]
    assert ollama.stop_tokens("gemma", []) == ["<end_of_turn>", "<eos>"]
    assert ollama.stop_tokens("mistral", ["</s>"]) == ["</s>"]


def test_the_modelfile_has_from_template_every_stop_system_and_sampling(smollm2):
    text = ollama.modelfile("physics-q8_0.gguf", smollm2.chat_template, [smollm2.eos_token], PHYSICS)
    assert text.startswith('FROM ./physics-q8_0.gguf\nTEMPLATE """{{- range $i, $_ := .Messages }}\n')
    for line in ['PARAMETER stop "<|im_end|>"', 'PARAMETER stop "<|endoftext|>"', "PARAMETER temperature 0.2", "PARAMETER top_p 0.9",
                 "PARAMETER repeat_penalty 1.1", "PARAMETER num_ctx 4096", f'SYSTEM """{PHYSICS}"""']:
        assert line in text.splitlines()
    assert ollama.parse_modelfile(text) == [
        ("model", "./physics-q8_0.gguf"), ("template", ollama.template_for(smollm2.chat_template)), ("stop", "<|im_end|>"),
        ("stop", "<|endoftext|>"), ("temperature", "0.2"), ("top_p", "0.9"), ("repeat_penalty", "1.1"), ("num_ctx", "4096"),
        ("system", PHYSICS)]
    with_adapter = ollama.modelfile("base-f16.gguf", smollm2.chat_template, [], None, adapter="physics-lora.gguf", temperature=0,
                                    num_ctx=8192)
    assert with_adapter.startswith("FROM ./base-f16.gguf\nADAPTER ./physics-lora.gguf\nTEMPLATE ")
    assert "SYSTEM" not in with_adapter and "PARAMETER temperature 0\n" in with_adapter and "PARAMETER num_ctx 8192\n" in with_adapter
    with pytest.raises(TutorError, match=r"^top_p must be in \(0, 1\], not 1.5$"):
        ollama.modelfile("x.gguf", smollm2.chat_template, [], None, top_p=1.5)


def test_a_system_prompt_with_triple_quotes(smollm2):
    mid_line = 'Quote the mark scheme as """like this""" and\n"""never""" invent one; end with """'
    text = ollama.modelfile("x.gguf", smollm2.chat_template, [], mid_line)
    assert dict(ollama.parse_modelfile(text))["system"] == mid_line  # Ollama ends the text only at a line ending in """
    for bad in ['Say:\n"""\nthen stop', 'A line ending in """   \nbreaks the Modelfile']:
        with pytest.raises(TutorError) as err:
            ollama.modelfile("x.gguf", smollm2.chat_template, [], bad)
        assert 'the system prompt: line 1 ends with """' in str(err.value) or 'line 2 ends with """' in str(err.value)
        assert "\n" not in str(err.value)
    with pytest.raises(TutorError, match=r"^the system prompt contains NO-BREAK SPACE \(U\+00A0\), which Ollama's Modelfile parser "):
        ollama.modelfile("x.gguf", smollm2.chat_template, [], "30\u00a0m s⁻¹")
    with pytest.raises(TutorError, match="^the GGUF file name './a\"b.gguf' cannot be written on one Modelfile line"):
        ollama.modelfile('a"b.gguf', smollm2.chat_template, [], None)


# ---------------------------------------------------------------------------------------------------------------------
# The renderer


def test_trim_markers_and_the_subset():
    render = ollama.render_go
    assert render('a  \n{{- "b" }}  \n c{{ "d" -}}  \n e {{-3}}|{{ 3 -}} x', []) == "ab  \n cde -3|3x"
    assert render("{{ len .Messages }} {{ len \"héllo\" }} {{ and 0 1 }} {{ or \"\" \"y\" }} {{ not .System }} {{ ne 1 2 }}",
                  [{"role": "user", "content": "q"}]) == "1 6 0 y true true"
    chat = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}, {"role": "user", "content": "c"}]
    template = ('{{- range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}'
                '{{ if $last }}[{{ $m.Content }}]{{ else if eq .Role "user" }}u{{ else }}{{ .Role }}{{ end }}{{ end }}'
                '{{ range slice .Messages 3 }}x{{ else }} none{{ end }} {{ $.System }}|')
    assert render(template, chat, "S") == "systemuassistant[c]x S|"  # SYSTEM is the first of the .Messages
    assert render(template, chat) == "uassistant[c] none |"


def test_ollama_feeds_the_template_as_ollama_does():
    template = "{{ range .Messages }}{{ .Role }}={{ .Content }};{{ end }}|{{ .System }}"
    assert ollama.render_go(template, [{"role": "user", "content": "q"}], "S") == "system=S;user=q;|S"  # SYSTEM goes first
    mine = [{"role": "system", "content": "mine"}, {"role": "user", "content": "q"}]
    assert ollama.render_go(template, mine, "S") == "system=mine;user=q;|mine"
    merged = [{"role": "user", "content": "a"}, {"role": "user", "content": "b"}, {"role": "system", "content": "late"}]
    assert ollama.render_go(template, merged) == "user=a\n\nb;system=late;|late"  # one role twice in a row: merged
    assert ollama.render_go(template, []) == "|"  # no messages: no SYSTEM either


@pytest.mark.parametrize("template", [
    "{{ with .System }}x{{ end }}", "{{ .System | len }}", '{{ printf "%s" .System }}', '{{ template "x" }}', "{{/* note */}}",
    "{{ range .Messages }}{{ .Images }}{{ end }}", "{{ .Tools }}", "{{ $x := 1 }}{{ $x = 2 }}", "{{ if .System }}open", "{{ end }}",
    "{{ 1.5 }}", "{{ .Messages }}", "{{ $nope }}", "{{ eq 1 \"1\" }}", "{{ range .Messages }}{{ .System }}{{ end }}",
])
def test_the_renderer_refuses_anything_outside_its_subset(template):
    with pytest.raises(TutorError) as err:
        ollama.render_go(template, [{"role": "user", "content": "q"}], "S")
    assert "\n" not in str(err.value)


def test_content_that_looks_like_a_template_is_passed_through_verbatim(smollm2):
    conversation = ollama.golden_conversations()[5]
    rendered = ollama.render_go(ollama.template_for(smollm2.chat_template), conversation)
    for message in conversation:
        assert f"<|im_start|>{message['role']}\n{message['content']}<|im_end|>\n" in rendered
    assert "{{ .System }} {% if %}" in rendered and "{{ $.Messages }}" in rendered


def test_golden_conversations():
    conversations = ollama.golden_conversations()
    assert [[m["role"] for m in c] for c in conversations][:3] == [["system", "user"], ["user"], ["system", "user", "assistant", "user"]]
    assert all(c[-1]["role"] == "user" for c in conversations)
    text = json.dumps(conversations, ensure_ascii=False)
    for needle in ["(DIAGRAM: a force diagram of a block on a slope)", "Δv = 3 m s⁻¹, θ = 30°, ½mv², 水", "{{ .System }} {% if %}"]:
        assert needle in text
    conversations[0][0]["content"] = "changed"
    assert ollama.golden_conversations()[0][0]["content"] != "changed"  # a fresh copy each time


# ---------------------------------------------------------------------------------------------------------------------
# The other families


def test_an_unknown_family_is_one_line():
    with pytest.raises(TutorError) as err:
        ollama.template_family("{% for m in messages %}### {{ m.role }}: {{ m.content }}\n{% endfor %}### assistant:")
    message = str(err.value)
    assert "\n" not in message and message.startswith("cannot export this chat template to Ollama: unrecognised family; supported: ")
    for family in ollama.FAMILIES:
        assert family in message
    with pytest.raises(TutorError, match="^unknown chat template family 'llama2'; supported: chatml"):
        ollama.go_template("llama2")
    families = [ollama.template_family(t) for t in (LLAMA3, LLAMA31, GEMMA3, GEMMA2, MISTRAL)]
    assert families == ["llama3", "llama3", "gemma", "gemma", "mistral"]


def test_llama3_renders_meta_s_documented_format():
    chat = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Define work."},
            {"role": "assistant", "content": "Force times distance."}, {"role": "user", "content": "Units?"}]
    expected = ("<|begin_of_text|><|start_header_id|>system<|end_header_id|>\n\nBe brief.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nDefine work.<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\nForce times distance.<|eot_id|>"
                "<|start_header_id|>user<|end_header_id|>\n\nUnits?<|eot_id|>"
                "<|start_header_id|>assistant<|end_header_id|>\n\n")
    template = ollama.template_for(LLAMA3)
    assert ollama.default_system(LLAMA3) is None and ollama.system_preamble(LLAMA3) == ""
    assert ollama.runtime_bos("llama3") == "<|begin_of_text|>"
    assert "<|begin_of_text|>" + ollama.render_go(template, chat) == expected  # the runtime adds the BOS itself
    assert ollama.render_go(template, chat[1:], "Be brief.") == expected.removeprefix("<|begin_of_text|>")
    assert ollama.check_contract(lambda m: expected, template, [chat], None, bos="<|begin_of_text|>") == []
    assert ollama.check_contract(lambda m: expected, template, [chat], None)[0].startswith("conversation 1: differs at character 2 ")


@pytest.mark.parametrize("family,jinja", [("llama3", LLAMA3), ("llama3", LLAMA31), ("gemma", GEMMA3), ("mistral", MISTRAL)],
                         ids=["llama3", "llama3.1", "gemma3", "mistral-v0.3"])
@pytest.mark.parametrize("system", [None, PHYSICS], ids=["no-SYSTEM", "SYSTEM"])
def test_the_contract_holds_for_the_other_families(smollm2, family, jinja, system):
    template = ollama.template_for(jinja)
    render = other_family(smollm2, family, jinja)
    assert ollama.check_contract(render, template, ollama.golden_conversations(), system, bos=ollama.runtime_bos(family)) == []


def test_llama31_s_dated_system_turn_is_reproduced(smollm2):
    preamble = "Cutting Knowledge Date: December 2023\nToday Date: 26 Jul 2024\n\n"
    assert ollama.default_system(LLAMA31) == preamble and ollama.system_preamble(LLAMA31) == preamble
    rendered = ollama.render_go(ollama.template_for(LLAMA31), [{"role": "user", "content": "Hi"}])
    assert rendered.startswith(f"<|start_header_id|>system<|end_header_id|>\n\n{preamble}<|eot_id|><|start_header_id|>user")
    # without the preamble, the contract says where it goes wrong
    bare = ollama.go_template("llama3")
    render = other_family(smollm2, "llama3", LLAMA31)
    problems = ollama.check_contract(render, bare, ollama.golden_conversations(), None, bos="<|begin_of_text|>")
    assert len(problems) == 6 and "differs at character 44 " in problems[0] and "Cutting Knowledge" in problems[0]


def test_a_training_template_that_refuses_a_conversation_is_reported(smollm2):
    problems = ollama.check_contract(other_family(smollm2, "gemma", GEMMA2), ollama.template_for(GEMMA2), ollama.golden_conversations(),
                                     PHYSICS, bos="<bos>")
    assert len(problems) == 6 and problems[0] == "conversation 1: the training chat template refuses it: System role not supported"


def test_ollama_is_importable_without_torch_or_transformers():
    code = "import sys, tutor.ollama; sys.exit(any(m in sys.modules for m in ('torch', 'transformers')))"
    assert subprocess.run([sys.executable, "-c", code]).returncode == 0


# ---------------------------------------------------------------------------------------------------------------------
# Go's own text/template, where Go is installed

GO_PROGRAM = textwrap.dedent("""\
    package main

    import (
        "encoding/json"
        "os"
        "strings"
        "text/template"
    )

    type Message struct{ Role, Content string }

    type Case struct {
        Template string    `json:"template"`
        Messages []Message `json:"messages"`
        System   string    `json:"system"`
    }

    func main() {
        var cases []Case
        if err := json.NewDecoder(os.Stdin).Decode(&cases); err != nil {
            panic(err)
        }
        out := []string{}
        for _, c := range cases {
            msgs := c.Messages
            if len(msgs) > 0 && msgs[0].Role != "system" && c.System != "" { // server/routes.go
                msgs = append([]Message{{Role: "system", Content: c.System}}, msgs...)
            }
            var system []string // template.go's collate
            var collated []*Message
            for i := range msgs {
                if msgs[i].Role == "system" {
                    system = append(system, msgs[i].Content)
                }
                if len(collated) > 0 && collated[len(collated)-1].Role == msgs[i].Role {
                    collated[len(collated)-1].Content += "\\n\\n" + msgs[i].Content
                } else {
                    collated = append(collated, &msgs[i])
                }
            }
            tmpl := template.Must(template.New("").Option("missingkey=zero").Parse(c.Template))
            var b strings.Builder
            data := map[string]any{"System": strings.Join(system, "\\n\\n"), "Messages": collated, "Response": ""}
            if err := tmpl.Execute(&b, data); err != nil {
                panic(err)
            }
            out = append(out, b.String())
        }
        json.NewEncoder(os.Stdout).Encode(out)
    }
""")


@pytest.mark.skipif(shutil.which("go") is None, reason="Go is not installed")
def test_go_s_text_template_renders_every_template_as_render_go_does(tmp_path, smollm2):
    (tmp_path / "go.mod").write_text("module check\n\ngo 1.18\n")
    (tmp_path / "main.go").write_text(GO_PROGRAM)
    templates = [ollama.template_for(t) for t in (smollm2.chat_template, LLAMA3, LLAMA31, GEMMA3, MISTRAL)]
    templates += [ollama.go_template("chatml"), 'a  \n{{- "b" }}  \n c{{ "d" -}}  \n e {{-3}}|{{ 3 -}} x{{ len "héllo" }}{{ or "" "y" }}']
    conversations = ollama.golden_conversations() + [[{"role": "user", "content": "a"}, {"role": "user", "content": "b"}], []]
    cases = [{"template": t, "messages": c, "system": s} for t in templates for c in conversations for s in ("", PHYSICS)]
    env = {"GOCACHE": str(tmp_path / "cache"), "GOFLAGS": "-mod=mod", "GOTOOLCHAIN": "local", "PATH": "/usr/bin:/bin:/usr/local/go/bin",
           "HOME": str(tmp_path)}
    done = subprocess.run(["go", "run", "."], cwd=tmp_path, input=json.dumps(cases), capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr
    for case, go in zip(cases, json.loads(done.stdout), strict=True):
        assert ollama.render_go(case["template"], case["messages"], case["system"] or None) == go
