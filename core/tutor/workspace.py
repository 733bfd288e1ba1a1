"""The workspace: where every stage keeps its files, one folder per subject.

  tutor-workspace/
    tutor.toml          # Config, validated below; later stages add sections
    templates/          # the user's prompt overrides, for every subject
    cache/diagrams/     # compiled diagrams, by content: never compiled twice
    cache/teacher/      # every teacher reply, by request: never paid for twice
    physics/
      templates/        # the user's prompt overrides for physics only
      bank/             # questions.jsonl, answers.jsonl, diagrams.jsonl
      diagram-requests.jsonl  # DIAGRAM markers waiting for code (diagram extract)
      diagrams/         # pictures rendered on request (diagram render)
      ...               # diagrams, datasets, adapters, reports (later stages)
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass
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

    @property
    def config_path(self) -> Path:
        return self.root / CONFIG_FILE

    def config(self) -> Config:
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
        """Content-addressed caches shared by every subject (compiled diagrams, ...)."""
        return self.root / "cache"

    def bank_dir(self, subject: str) -> Path:
        return self.subject_dir(subject) / "bank"

    def template_dirs(self, subject: str) -> list[Path]:
        """The user's template folders for a subject, most specific first."""
        configured = self.config().templates
        dirs = [self.subject_dir(subject) / "templates", self.root / "templates"]
        return ([self.root / configured] if configured else []) + dirs
