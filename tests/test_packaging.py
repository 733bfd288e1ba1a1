"""From a built wheel into a fresh virtual environment, as a user installs tutor.

Proves that the core templates ship inside the wheel (not only in the source
tree) and that a scaffolded subject plugin installs and is discovered.
"""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = pytest.mark.slow


# A fresh environment: the caller's TUTOR_* settings must not leak in.
ENV = {k: v for k, v in os.environ.items() if not k.startswith("TUTOR_")}


def sh(*args, **kwargs):
    result = subprocess.run([str(a) for a in args], capture_output=True, text=True, env=ENV, **kwargs)
    assert result.returncode == 0, f"{args}\n{result.stdout}\n{result.stderr}"
    return result.stdout


@pytest.fixture(scope="module")
def venv(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    sh(sys.executable, "-m", "build", "--wheel", "--outdir", tmp / "dist", ROOT)
    wheel = next((tmp / "dist").glob("tutor-*.whl"))
    sh(sys.executable, "-m", "venv", tmp / "venv")
    bin_dir = tmp / "venv" / "bin"
    sh(bin_dir / "pip", "install", "--quiet", wheel)
    sh(bin_dir / "tutor", "plugin", "new", "newsubj", "--path", tmp)
    sh(bin_dir / "pip", "install", "--quiet", tmp / "tutor-newsubj")
    return bin_dir


def test_wheel_contains_templates_and_renders_a_prompt(venv):
    templates = sh(venv / "python", "-c", "from tutor.prompts import core_templates_dir as d; print(d())").strip()
    assert "site-packages/tutor/templates/prompts" in templates
    out = sh(venv / "tutor", "--subject", "newsubj", "prompts", "render", "answer", cwd=venv)
    assert "## Mark scheme: the answer must earn every mark" in out  # from the wheel's core template
    assert "You are an expert Newsubj teacher" in out  # the plugin's own _tutor.j2


def test_scaffolded_plugin_is_discovered_and_valid(venv):
    out = sh(venv / "tutor", "--subject", "newsubj", "types")
    assert [line.split()[0] for line in out.splitlines()[2:]] == ["mcq", "short"]
    assert "ok: 2 questions" in sh(venv / "tutor", "--subject", "newsubj", "bank", "validate")
    assert "newsubj" in sh(venv / "tutor", "subjects")


def test_wheel_ships_the_web_page_and_its_vendored_libraries_with_their_licences(venv):
    static = Path(sh(venv / "python", "-c", "from tutor.serve.web import STATIC; print(STATIC)").strip())
    assert "site-packages/tutor/serve/static" in str(static)
    for name in ("index.html", "app.js", "style.css", "vendor/VERSIONS.md", "vendor/katex/katex.min.js", "vendor/katex/LICENSE",
                 "vendor/marked/marked.umd.js", "vendor/marked/LICENSE", "vendor/dompurify/purify.min.js", "vendor/dompurify/LICENSE"):
        assert (static / name).is_file(), name
    assert "https://" not in (static / "index.html").read_text(encoding="utf-8")  # no CDN
