"""tutor.toml: the settings of every stage, validated; one section per stage.

Each section's fields carry their meaning (`tutor config` shows them all,
filled in). Kept apart from workspace.py, which only knows paths, so that the
command line can start without building these schemas.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Literal

from pydantic import Field, ValidationError, field_validator, model_validator

from .errors import ConfigError
from .models import Model

# Teacher presets: where each provider listens, which variable holds its key,
# and list prices in US$ per million tokens (for estimates only; set
# price_input/price_output to your own contract). A preset fills only what
# tutor.toml leaves out. An empty api_key_env means the server needs no key.
TEACHER_PRESETS: dict[str, dict] = {
    "deepseek-reasoner": {  # DeepSeek R1: writes its reasoning apart, in reasoning_content
        "base_url": "https://api.deepseek.com", "model": "deepseek-reasoner", "api_key_env": "DEEPSEEK_API_KEY",
        "max_tokens": 16384, "price_input": 0.28, "price_output": 0.42, "reasoning_tokens": 2000,
    },
    "deepseek-chat": {
        "base_url": "https://api.deepseek.com", "model": "deepseek-chat", "api_key_env": "DEEPSEEK_API_KEY",
        "temperature": 0.7, "max_tokens": 4096, "price_input": 0.28, "price_output": 0.42,
    },
    "openai": {
        "base_url": "https://api.openai.com/v1", "model": "gpt-4.1", "api_key_env": "OPENAI_API_KEY",
        "temperature": 0.7, "max_tokens": 4096, "price_input": 2.0, "price_output": 8.0,
    },
    "ollama": {"base_url": "http://127.0.0.1:11434/v1", "api_key_env": "", "max_tokens": 4096, "price_input": 0.0, "price_output": 0.0},
    # vLLM, tutor serve
    "local": {"base_url": "http://127.0.0.1:8000/v1", "api_key_env": "", "max_tokens": 4096, "price_input": 0.0, "price_output": 0.0},
}
# What neither tutor.toml nor the preset sets.
_TEACHER_DEFAULTS = {"max_tokens": 4096, "concurrency": 16, "timeout": 600.0, "deadline": 1800.0, "backoff": 1.0, "stream": True,
                     "retry_timeouts": 1, "repair_rounds": 2, "price_input": 0.0, "price_output": 0.0, "reasoning_tokens": 0}


class TeacherConfig(Model):
    """[teacher] in tutor.toml: the OpenAI-compatible model that writes gold answers and diagram code.

    Every value may also come from the environment as TUTOR_TEACHER_<NAME>
    (e.g. TUTOR_TEACHER_BASE_URL), which wins over the file. The API key itself
    is only ever read from the variable `api_key_env` names, never stored.
    """

    preset: str = Field(default="deepseek-reasoner", description=f"Fills what is not set here: {', '.join(TEACHER_PRESETS)}.")
    base_url: str | None = Field(default=None, description="The API's base URL, e.g. http://127.0.0.1:8000/v1 for a local vLLM.")
    model: str | None = None
    api_key_env: str | None = Field(default=None, description="Name of the environment variable holding the API key; '' for none.")
    temperature: float | None = Field(default=None, ge=0, le=2, description="None: the server's default (DeepSeek's reasoner ignores it).")
    max_tokens: int | None = Field(default=None, ge=1, description="Per request, reasoning included.")
    concurrency: int | None = Field(default=None, ge=1, le=1024, description="Requests in flight at once.")
    timeout: float | None = Field(default=None, gt=0, description="Seconds one request may take.")
    deadline: float | None = Field(default=None, gt=0, description="Seconds one item may take over all its retries.")
    retry_timeouts: int | None = Field(default=None, ge=0, description="Times a request that timed out is sent again; 0: never. "
                                       "Each may be billed: a provider keeps generating after the client gives up.")
    backoff: float | None = Field(default=None, ge=0, description="Seconds before retrying a failure the server gave no Retry-After for; "
                                  "doubles each time, up to 60.")
    stream: bool | None = Field(default=None, description="Stream replies (server-sent events); "
                                "turn off for servers without stream_options.")
    budget_requests: int | None = Field(default=None, ge=0, description="Stop a run after this many requests sent.")
    budget_tokens: int | None = Field(default=None, ge=0, description="Stop a run after this many tokens (prompt + completion) used.")
    price_input: float | None = Field(default=None, ge=0, description="US$ per million prompt tokens, for cost estimates.")
    price_output: float | None = Field(default=None, ge=0, description="US$ per million completion tokens, for cost estimates.")
    reasoning_tokens: int | None = Field(default=None, ge=0, description="Reasoning tokens expected per reply, for --dry-run estimates.")
    repair_rounds: int | None = Field(default=None, ge=0, le=10,
                                      description="Times a diagram that does not compile is sent back with its error.")

    @field_validator("preset")
    @classmethod
    def _known_preset(cls, preset: str) -> str:
        if preset not in TEACHER_PRESETS:
            raise ValueError(f"unknown preset {preset!r}; valid: {', '.join(sorted(TEACHER_PRESETS))}")
        return preset

    def resolve(self, environ: dict[str, str] | None = None) -> TeacherConfig:
        """Every value filled: built-in defaults < preset < tutor.toml < TUTOR_TEACHER_* variables."""
        environ = os.environ if environ is None else environ
        from_env = {name: environ[f"TUTOR_TEACHER_{name.upper()}"] for name in type(self).model_fields
                    if f"TUTOR_TEACHER_{name.upper()}" in environ}
        try:
            preset = TeacherConfig(preset=from_env.get("preset", self.preset)).preset
            given = {k: v for k, v in self.model_dump().items() if v is not None}
            merged = {**_TEACHER_DEFAULTS, **TEACHER_PRESETS[preset], **given, **from_env, "preset": preset}
            return TeacherConfig.model_validate(merged)
        except ValidationError as err:
            first = err.errors()[0]
            name = ".".join(map(str, first["loc"]))
            where = f"TUTOR_TEACHER_{name.upper()}" if name in from_env else f"teacher.{name}"
            raise ConfigError(f"{where}: {first['msg'].removeprefix('Value error, ')}") from None


class ModelConfig(Model):
    """[model] in tutor.toml: the base model every subject's adapters are trained from."""

    base: str = Field(default="smollm2-135m", description="A preset (`tutor models list`), a Hugging Face id (org/name) "
                      "or a local model folder.")


class GrpoConfig(Model):
    """[train.grpo] in tutor.toml: reinforcement (GRPO) on top of an SFT adapter, scored by the plugins' rewards."""

    max_steps: int = Field(default=20, ge=1, description="Optimizer steps.")
    generations: int = Field(default=4, ge=2, description="Completions sampled per prompt; rewards are compared within each group.")
    prompts_per_step: int = Field(default=2, ge=1, description="Distinct prompts per step "
                                  "(the batch is prompts_per_step x generations completions).")
    max_completion: int = Field(default=192, ge=8, description="Longest completion, in tokens.")
    learning_rate: float = Field(default=5e-6, gt=0)
    beta: float = Field(default=0.0, ge=0, description="KL penalty towards the SFT model; 0 needs no reference model (half the memory).")
    temperature: float = Field(default=1.0, gt=0, description="Sampling temperature of the generations.")


class TrainConfig(Model):
    """[train] in tutor.toml: how datasets are split and mixed, and how adapters are trained.

    Layered: these defaults < the subject plugin's `Subject.train` < tutor.toml < command-line flags.
    """

    # the dataset
    seed: int = Field(default=0, description="Seed of the split, the identity examples' order and training.")
    validation: float = Field(default=0.1, ge=0, lt=1, description="Share of each question type held out for validation.")
    test: float = Field(default=0.1, ge=0, lt=1, description="Share of each question type held out for test; never trained on.")
    identity_ratio: float = Field(default=0.05, ge=0, lt=1, description="Share of the answer role's train split "
                                  "that is identity examples ('who are you').")
    identity_name: str | None = Field(default=None, description="What the tutor calls itself; default '<Subject> Tutor'.")
    identity_maker: str = Field(default="the tutor project", min_length=1, description="Who the tutor says made it.")
    max_length: int = Field(default=2048, ge=16, description="Longest example in tokens: the dataset card counts longer ones, "
                            "training truncates them.")
    # LoRA SFT
    backend: Literal["auto", "peft", "unsloth"] = Field(default="auto", description="auto: Unsloth when a CUDA GPU and unsloth are "
                                                        "present, else peft + trl.")
    epochs: float = Field(default=1.0, gt=0, description="Passes over the train split. One keeps the README's main job under "
                          "15 minutes on 2 CPU cores without bf16; 2-3 suit a small bank when time allows.")
    max_steps: int | None = Field(default=None, ge=1, description="Stop after this many optimizer steps (wins over epochs).")
    max_minutes: float | None = Field(default=None, gt=0, description="Stop (and save) after this much training time.")
    batch_size: int = Field(default=4, ge=1, description="Examples per optimizer step, per process.")
    micro_batch: int | None = Field(default=None, ge=1, description="Examples per forward pass; the rest is gradient accumulation. "
                                    "Default: 1 on a CPU (no padding, so no attention mask: measured as fast as 4 and a third of the "
                                    "memory), batch_size on a GPU.")
    learning_rate: float = Field(default=2e-4, gt=0)
    warmup_ratio: float = Field(default=0.05, ge=0, lt=1)
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int = Field(default=32, ge=1)
    lora_dropout: float = Field(default=0.05, ge=0, lt=1)
    lora_targets: list[str] | None = Field(default=None, description="Module names LoRA adapts; default every linear layer of the block.")
    packing: bool | None = Field(default=None, description="Pack examples into rows without padding. Default: where a varlen attention "
                                 "kernel makes that pay (CUDA with unsloth or flash-attn); else batches of similar length, "
                                 "padded to the longest.")
    precision: Literal["auto", "bf16", "fp32"] = Field(default="auto", description="auto: bf16 mixed precision on a GPU or CPU with "
                                                       "native bf16 (AMX or AVX512-BF16), else fp32. LoRA weights stay fp32 either way.")
    gradient_checkpointing: bool | None = Field(default=None, description="Recompute activations to save memory. Default: on a GPU only "
                                                "(on a CPU memory is plenty and it costs a third more compute).")
    save_steps: int = Field(default=5, ge=1, description="Checkpoint every this many steps (--resume restarts from the last).")
    logging_steps: int = Field(default=1, ge=1)
    load_in_4bit: bool | None = Field(default=None, description="QLoRA (GPU only); default: when the model's name says bnb-4bit.")
    # fast metrics during SFT of the answer role
    eval_every: Literal["epoch"] | None = Field(default=None, description="'epoch': after each epoch, answer validation questions and "
                                                "score them (mcq, form, final-answer) into log.jsonl, loss.png and tutor-adapter.json. "
                                                "SFT of the answer role only; the diagram role and GRPO skip it.")
    eval_limit: int = Field(default=16, ge=1, description="Validation questions answered after each epoch (eval_every).")
    eval_max_new_tokens: int = Field(default=256, ge=1, description="Longest reply generated after each epoch (eval_every).")
    grpo: GrpoConfig = Field(default_factory=GrpoConfig)
    rag: bool = Field(default=False, description="Put the knowledge base's chunks into the answer role's prompts, as --rag does when "
                      "answering, so the adapter learns to use them (`tutor kb build` first). A question's own worked example is "
                      "left out of its prompt.")
    roles: list[Literal["answer", "diagram"]] = Field(default=["answer"], min_length=1,
                                                      description="The adapters `tutor run` trains, one per role.")

    @model_validator(mode="after")
    def _room_to_train(self) -> TrainConfig:
        if self.validation + self.test >= 1:
            raise ValueError(f"validation + test is {self.validation + self.test:g}: nothing would be left to train on")
        return self


class DiagramsConfig(Model):
    """[diagrams] in tutor.toml: how untrusted diagram code is compiled."""

    timeout: float = Field(default=30.0, gt=0, le=3600, description="Seconds one pdflatex run may take (wall clock and CPU); "
                           "raise it for heavy pictures on a slow machine.")
    sandbox: Literal["auto", "bwrap", "off"] = Field(default="auto", description="auto: compile under bubblewrap where it runs, else "
                                                     "say so once and rely on the filter and kpathsea; bwrap: refuse to compile without "
                                                     "it; off: the filter and kpathsea only.")


class ImportSource(Model):
    """One export file of [collect.<subject>] imports: `collect import`'s options. Paths are relative to tutor.toml's folder."""

    file: Path
    source: str | None = Field(default=None, description="The question source that reads it (default: by extension, csv or jsonl).")
    mapping: Path | None = Field(default=None, description="A TOML file mapping their columns to our fields.")
    columns: dict[str, str] = Field(default_factory=dict, description="Our field -> their column, e.g. {stem = \"Question\"}.")
    defaults: dict[str, str | int] = Field(default_factory=dict, description="Values for fields the file lacks, e.g. {type = ...}.")
    encoding: str = "utf-8-sig"
    delimiter: str | None = None
    near: float = Field(default=0.8, ge=0, le=1, description="Similarity from which questions are reported as near duplicates.")


class CollectSources(Model):
    """[collect.<subject>] in tutor.toml: where `tutor run` brings one subject's questions from."""

    imports: list[ImportSource] = Field(default_factory=list, description="CSV or JSON Lines exports to import.")
    sites: list[Path] = Field(default_factory=list, description="Scrape TOML files (see docs/collecting.md).")


class EvalConfig(Model):
    """[eval] in tutor.toml: the evaluation `tutor run` makes of each new adapter against its base (`tutor eval`'s flags)."""

    split: Literal["test", "validation"] = Field(default="test", description="The held-out split of `dataset build`.")
    limit: int | None = Field(default=None, ge=1, description="Only the first N questions (a quick run).")
    max_new_tokens: int = Field(default=384, ge=1)
    batch_size: int = Field(default=24, ge=1)
    judge: Literal["teacher"] | None = Field(default=None, description="Also mark coverage with the teacher as a judge.")
    rag: bool = Field(default=False, description="Also evaluate the adapter with the knowledge base's chunks in its prompts, "
                      "paired with it on the same questions (`tutor eval --rag`). Off by default: it adds a third model's "
                      "generations to the eval stage.")


class ExportConfig(Model):
    """[export] in tutor.toml: what `tutor run` exports once an adapter is trained and evaluated (`tutor export`'s flags)."""

    formats: list[str] = Field(default=["peft", "merged", "gguf", "ollama"], description="peft, merged, gguf, ollama, ollama-lora; "
                               "[] skips the stage.")
    quants: list[str] = Field(default=["f16", "q8_0"], description="GGUF types: f16, q8_0, bf16, f32.")
    force: bool = Field(default=False, description="Export even when the eval gate finds the adapter worse than its base.")


class KbConfig(Model):
    """[kb] in tutor.toml: the knowledge base (`tutor kb`) and how answers use it."""

    url: str | None = Field(default=None, description="A Chroma server (e.g. http://127.0.0.1:8001); default: an embedded store "
                            "under <workspace>/<subject>/kb/chroma.")
    k: int = Field(default=5, ge=1, le=50, description="Chunks retrieved into a prompt.")


class ServeConfig(Model):
    """[serve] in tutor.toml: `tutor serve`'s address and limits, conservative by default."""

    host: str = Field(default="127.0.0.1", description="Loopback only, unless you say otherwise (--host).")
    port: int = Field(default=8000, ge=0, le=65535)
    api_key_file: Path | None = Field(default=None, description="A file of accepted API keys, one a line; TUTOR_API_KEYS (comma-"
                                      "separated) adds more. With none, every route but /health answers 401.")
    max_tokens: int = Field(default=512, ge=1, description="The most new tokens a request gets; a larger max_tokens is capped to it.")
    max_body_bytes: int = Field(default=1_000_000, ge=1024, description="A larger request body is refused (413).")
    max_messages: int = Field(default=64, ge=1, description="More messages in a request is a 400.")
    max_prompt_tokens: int = Field(default=4096, ge=16, description="A longer prompt is a 400.")
    queue: int = Field(default=16, ge=1, description="Requests waiting or running at once; more get 429 with Retry-After.")
    timeout: float = Field(default=300.0, gt=0, description="Seconds a request may wait and run in all; then 504.")
    batch: int = Field(default=8, ge=1, le=256, description="Requests the local engine decodes together, in one forward pass per "
                       "token; the rest of the queue joins as rows finish.")


class Config(Model):
    """tutor.toml. Every stage owns one section; unknown keys are errors, so typos surface."""

    templates: Path | None = Field(default=None, description="An extra folder of prompt templates, searched before all others.")
    teacher: TeacherConfig = Field(default_factory=TeacherConfig)
    model: ModelConfig = Field(default_factory=ModelConfig)
    train: TrainConfig = Field(default_factory=TrainConfig)
    diagrams: DiagramsConfig = Field(default_factory=DiagramsConfig)
    serve: ServeConfig = Field(default_factory=ServeConfig)
    collect: dict[str, CollectSources] = Field(default_factory=dict, description="Per subject: [collect.physics] imports, sites.")
    eval: EvalConfig = Field(default_factory=EvalConfig)
    export: ExportConfig = Field(default_factory=ExportConfig)
    kb: KbConfig = Field(default_factory=KbConfig)
