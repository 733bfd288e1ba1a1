#!/usr/bin/env bash
# The two commands of the README, on a fresh Debian machine with Python 3.11:
#   ./run.sh        set everything up, then run the main job on the embedded defaults
#   ./run.sh test   set everything up, then run the whole test suite
# Safe to re-run: every step skips what is already done.
set -euo pipefail
cd "$(dirname "$0")"
task="${1:-main}"
VENV="${TUTOR_VENV:-.venv}"

say() { printf '\n==> %s\n' "$*"; }

# --- system packages, only where missing -------------------------------------
# TeX Live compiles diagrams (chemfig needs simplekv from -plain-generic);
# bubblewrap is the sandbox it compiles untrusted diagram code in;
# poppler turns PDFs into PNG and SVG; Chromium and its driver scrape sites
# that need JavaScript or a login.
SYSTEM_PACKAGES=(texlive-latex-base texlive-latex-recommended texlive-latex-extra texlive-pictures
                 texlive-science texlive-plain-generic bubblewrap poppler-utils chromium chromium-driver)
missing=()
python3 -c 'import ensurepip, venv' 2>/dev/null || missing+=(python3-venv)
for package in "${SYSTEM_PACKAGES[@]}"; do
  dpkg -s "$package" >/dev/null 2>&1 || missing+=("$package")
done
if ((${#missing[@]})); then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    say "installing system packages: ${missing[*]}"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
    hash -r
  else
    # Not fatal: everything but diagrams works, and diagram commands name what is missing.
    echo "warning: missing system packages: ${missing[*]} (run as root to install them)" >&2
  fi
fi

# --- Python packages: the core, the three subjects, the tutorial's example ----
if [ ! -x "$VENV/bin/python" ]; then
  say "creating $VENV"
  python3 -m venv "$VENV"
fi
# PyTorch first, and pinned: left to the `train` extra, pip would take torch's
# default Linux build, which pulls GBs of CUDA libraries. torch==2.13.0 is the
# CPU build here. A torch already installed (a CUDA build, say) is kept;
# TUTOR_TORCH names another requirement, e.g. for a GPU machine.
if ! "$VENV/bin/python" -c 'import torch' 2>/dev/null; then
  say "installing PyTorch (${TUTOR_TORCH:-torch==2.13.0}) into $VENV"
  "$VENV/bin/pip" install --quiet --disable-pip-version-check "${TUTOR_TORCH:-torch==2.13.0}"
fi
say "installing tutor, its training and evaluation stack and its subject plugins into $VENV"
"$VENV/bin/pip" install --quiet --disable-pip-version-check \
  -e ".[test,train,eval,serve,export,kb]" -e plugins/physics -e plugins/economics -e plugins/chemistry -e docs/example/tutor-geography
tutor="$VENV/bin/tutor"

case "$task" in
  test)
    say "checking the code with ruff (pyproject.toml's rules and line length)"
    "$VENV/bin/ruff" check .
    say "running the test suite"
    exec "$VENV/bin/pytest"
    ;;
  main)
    say "installed subjects"
    "$tutor" subjects
    # The whole physics pipeline on the embedded defaults (SmolLM2-135M-Instruct, the sample bank's gold answers):
    # diagrams, dataset, one epoch of LoRA SFT, eval of base vs tuned, export. A second `tutor run` does nothing.
    say "physics: tutor run (the whole pipeline; README says how long it takes)"
    "$tutor" --subject physics run
    say "done. Next: tutor --help, docs/plugin-guide.md"
    ;;
  *)
    echo "usage: ./run.sh [main|test]" >&2
    exit 2
    ;;
esac
