"""The workspace: where every stage keeps its files, one folder per subject.

  tutor-workspace/
    tutor.toml          # Config (config.py); one section per stage
    templates/          # the user's prompt overrides, for every subject
    cache/diagrams/     # compiled diagrams, by content: never compiled twice
    cache/teacher/responses.jsonl  # every teacher reply, by request: never paid for twice
    physics/
      templates/        # the user's prompt overrides for physics only
      bank/             # questions.jsonl, answers.jsonl, diagrams.jsonl, and the stages' rejects
      diagram-requests.jsonl  # DIAGRAM markers waiting for code (diagram extract)
      diagrams/         # pictures rendered on request (diagram render)
      scrape/<site>/    # pages fetched from a site, so a re-run fetches only the rest
      datasets/<role>/  # training sets (dataset build)
      adapters/<role>/  # LoRA adapters (train)
      evals/<time>/     # evaluation reports (eval)
      run.json          # what `tutor run` did: each stage's input fingerprint, status and figures
      .<stage>.lock     # one run of a stage per subject at a time
    exports/<subject>/  # exported models (export)
    run-summary.md      # the last `tutor run`'s summary
    .run.lock           # one `tutor run` per workspace at a time (holds its pid)

Every path a stage reads or writes is named here, once; stages ask the
Workspace instead of joining folder names themselves.
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import ConfigError

if TYPE_CHECKING:
    from .config import Config

CONFIG_FILE = "tutor.toml"


def default_root() -> Path:
    return Path(os.environ.get("TUTOR_WORKSPACE") or "tutor-workspace")


@dataclass(frozen=True)
class Workspace:
    root: Path
    # A config read once and kept (pinned()): a run that lasts an hour must not see half of an edit made meanwhile.
    pinned_config: Config | None = field(default=None, compare=False, repr=False)

    def pinned(self) -> Workspace:
        """This workspace with tutor.toml read now, once: every stage of a run sees the same settings."""
        return Workspace(self.root, self.config())

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def config(self) -> Config:
        if self.pinned_config is not None:
            return self.pinned_config
        from pydantic import ValidationError

        from .config import Config

        if not self.config_path.exists():
            return Config()
        try:
            data = tomllib.loads(self.config_path.read_text(encoding="utf-8"))
            return Config.model_validate(data)
        except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
            raise ConfigError(f"{self.config_path}: {err}") from None
        except ValidationError as err:
            first = err.errors()[0]
            field = ".".join(map(str, first["loc"]))
            raise ConfigError(f"{self.config_path}: {field}: {first['msg'].removeprefix('Value error, ')}") from None

    def subject_dir(self, subject: str) -> Path:
        return self.root / subject

    @property
    def cache_dir(self) -> Path:
        """Content-addressed caches shared by every subject (compiled diagrams, teacher replies)."""
        return self.root / "cache"

    @property
    def diagram_cache(self) -> Path:
        return self.cache_dir / "diagrams"

    @property
    def teacher_log(self) -> Path:
        """The teacher's response log (llm_client.ResponseLog), shared by every subject and stage."""
        return self.cache_dir / "teacher" / "responses.jsonl"

    def bank_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "bank"

    def diagram_requests(self, subject: str) -> Path:
        """The diagram requests `diagram extract` gathers and `teach diagrams` works through."""
        return self.subject_dir(subject) / "diagram-requests.jsonl"

    def pictures_dir(self, subject: str) -> Path:
        """Where rendered pictures are written for a person to look at."""
        return self.subject_dir(subject) / "diagrams"

    def scrape_dir(self, subject: str, site: str) -> Path:
        """One site's fetched pages and their index."""
        return self.subject_dir(subject) / "scrape" / site

    def dataset_dir(self, subject: str, role: str) -> Path:
        return self.subject_dir(subject) / "datasets" / role

    def adapters_dir(self, subject: str, role: str) -> Path:
        return self.subject_dir(subject) / "adapters" / role

    def exports_dir(self, subject: str) -> Path:
        return self.root / "exports" / subject

    def run_record(self, subject: str) -> Path:
        """`tutor run`'s record of a subject: each stage's inputs, status and figures."""
        return self.subject_dir(subject) / "run.json"

    @property
    def run_summary(self) -> Path:
        return self.root / "run-summary.md"

    @property
    def run_lock(self) -> Path:
        return self.root / ".run.lock"

    def lock(self, subject: str, stage: str) -> Path:
        """The lock file that lets one run of `stage` at a time work on a subject."""
        return self.subject_dir(subject) / f".{stage}.lock"

    def template_dirs(self, subject: str) -> list[Path]:
        """The user's template folders for a subject, most specific first."""
        configured = self.config().templates
        dirs = [self.subject_dir(subject) / "templates", self.root / "templates"]
        return ([self.root / configured] if configured else []) + dirs
