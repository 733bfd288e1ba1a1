"""Diagram code to pictures: pdflatex in a sandbox, a content-addressed cache, many at once.

Every input is untrusted model output, so each compile runs:
  - isolated first: under bubblewrap, where the only files that exist are the
    TeX tree (read-only), the precompiled formats (read-only) and a private
    job directory; no network, no /proc, no other process, nothing of $HOME,
    /etc or /tmp. Where bubblewrap cannot run, that is said once and the
    layers below still hold;
  - filtered second: code that names pdfTeX's file primitives (\\pdfobj file,
    \\pdfximage, \\pdffiledump...), a file-reading command (\\input,
    \\includegraphics...) or a way to build a command's name from pieces
    (\\csname, \\catcode, \\scantokens, ^^ escapes...) is refused before TeX
    starts;
  - in a private temporary job directory, with a minimal environment;
  - with shell escape off twice over (-no-shell-escape and shell_escape=f),
    and paranoid file access (openin_any=p, openout_any=p): no absolute
    paths, no `..`, no dot files, for reading or writing;
  - in its own process group, killed whole at the wall-clock timeout, with
    limits on CPU time, memory and output file size (set by prlimit, not in a
    forked child: the renderer runs in threads), a page cap, and an input
    size cap checked before TeX starts.
Never lualatex: \\directlua runs code even with shell escape off (CVE-2023-32700).

Speed: a format's preamble (TikZ, pgfplots... most of a compile's time) is
dumped once into a precompiled .fmt with mylatexformat, stored uncompressed
(pdflatex reads a gzipped and a plain .fmt alike; inflating 7 MB was half of
a small diagram's compile), and body-only diagrams compile against it;
standalone documents have untrusted preambles and compile plainly. A second
pdflatex pass runs only where the first one read a picture position that the
second would know (TikZ `remember picture`: chemfig's curly arrows) or LaTeX
asks for one. The PNG is rasterised by pdftoppm and deflated here (pdftoppm
deflates at level 9, which cost more than the rasterising); the SVG is made
on first request. Many diagrams render in a thread pool (each job is a
subprocess, so threads suffice).
"""

from __future__ import annotations

import gzip
import hashlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
import warnings
import zlib
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from functools import cache
from pathlib import Path
from typing import Literal

from .errors import TutorError
from .models import DiagramFormat

RENDERER_VERSION = 2  # part of every cache key: bump it when output would change

# Which Debian package ships each TeX file our formats need, for one-line errors.
DEBIAN_PACKAGE = {
    "pdflatex": "texlive-latex-base",
    "amsmath.sty": "texlive-latex-base",
    "standalone.cls": "texlive-latex-extra",
    "mylatexformat.ltx": "texlive-latex-extra",
    "tikz.sty": "texlive-pictures",
    "pgfplots.sty": "texlive-pictures",
    "circuitikz.sty": "texlive-pictures",
    "chemfig.sty": "texlive-pictures",
    "simplekv.sty": "texlive-plain-generic",
    "siunitx.sty": "texlive-science",
    "mhchem.sty": "texlive-science",
    "pdftoppm": "poppler-utils",
    "pdftocairo": "poppler-utils",
}
TEXLIVE_PACKAGES = sorted({p for p in DEBIAN_PACKAGE.values()})

# Failures that say nothing about the code (a busy machine, a broken TeX
# install) are never cached: the same code may compile next time.
NOT_THE_CODES_FAULT = ("stopped:", "pdflatex failed")


@dataclass(frozen=True)
class Limits:
    timeout_s: float = 30.0  # wall clock, per pdflatex run ([diagrams] timeout in tutor.toml)
    cpu_s: int = 30
    memory_bytes: int = 2 << 30
    file_bytes: int = 50 << 20  # largest file TeX may write (the PDF, the log)
    max_pages: int = 8
    max_input_bytes: int = 100_000  # a diagram is a few KB; 100 KB is already absurd
    png_dpi: int = 150
    # auto: bubblewrap where it runs, else say so once and go on with the filter and kpathsea;
    # bwrap: refuse to compile without it; off: the filter and kpathsea only.
    sandbox: Literal["auto", "bwrap", "off"] = "auto"


@dataclass
class CompileError:
    """Why a diagram did not render, concisely: the first error and where in the code."""

    message: str
    line: int | None = None  # in the code as given (the body, or the whole standalone document)
    code_line: str | None = None

    def __str__(self) -> str:
        where = f"line {self.line}: " if self.line else ""
        shown = f"\n    {self.code_line.strip()}" if self.code_line else ""
        return f"{where}{self.message}{shown}"

    def for_repair(self) -> str:
        """The same facts, phrased for a model asked to fix its code."""
        at = f" at line {self.line} of your code:\n    {self.code_line.strip()}\n" if self.line and self.code_line else ".\n"
        return f"The code did not compile{at}pdflatex said: {self.message}\nFix the error and reply with the whole corrected code."


@dataclass
class Rendering:
    key: str
    format: str
    ok: bool
    pdf: Path | None = None
    png: Path | None = None
    error: CompileError | None = None
    cached: bool = False
    seconds: float = 0.0
    renderer: Renderer | None = field(default=None, repr=False)  # converts the SVG, with its limits and sandbox
    warnings: list[str] = field(default_factory=list)  # compiled, but the user should know (only page 1 shown...)

    @property
    def svg(self) -> Path | None:
        """The SVG beside the PDF, converted on first request and kept in the cache entry.

        Made lazily because most callers (the teach and reward loops) never look at it.
        """
        if not self.ok or self.pdf is None:
            return None
        target = self.pdf.with_name("diagram.svg")
        if not target.exists():
            self.renderer.pdf_to_svg(self.pdf, target)
        return target


@dataclass
class _Job:
    fmt: DiagramFormat
    code: str
    standalone: bool
    key: str = field(init=False)

    def __post_init__(self):
        blob = json.dumps([RENDERER_VERSION, self.fmt.name, self.fmt.preamble, self.standalone, self.code])
        self.key = hashlib.sha256(blob.encode()).hexdigest()


class Renderer:
    """Compiles diagram code to PDF and PNG (and SVG on request), caching by content under `cache_dir`."""

    def __init__(self, cache_dir: Path, limits: Limits = Limits(), precompile: bool = True):
        # Absolute: pdflatex runs in its own job directory and must still find our formats.
        self.cache_dir, self.limits, self.precompile = Path(cache_dir).resolve(), limits, precompile
        self._format_locks: dict[str, threading.Lock] = {}
        self._lock = threading.Lock()

    # --- public ---------------------------------------------------------------------

    def render(self, fmt: DiagramFormat, code: str, standalone: bool = False) -> Rendering:
        job = _Job(fmt, code, standalone)
        start = time.perf_counter()
        if refused := self._refuse(job):  # before the cache too: a cache from an older, laxer version must not serve it
            return Rendering(job.key, fmt.name, False, error=refused)
        if cached := self._from_cache(job):
            return cached
        entry = self._entry(job.key)
        entry.parent.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".staging-", dir=entry.parent))
        notes: list[str] = []
        try:
            error = self._compile(job, staging, notes)
            result = {"ok": error is None, "format": fmt.name, "error": asdict(error) if error else None, "warnings": notes}
            if error and error.message.startswith(NOT_THE_CODES_FAULT):
                # could pass next time: not cached
                return Rendering(job.key, fmt.name, False, error=error, seconds=time.perf_counter() - start)
            (staging / "result.json").write_text(json.dumps(result), encoding="utf-8")
            try:
                os.rename(staging, entry)  # atomic: readers see no entry or a whole one
            except OSError:
                pass  # another worker published the same key first; theirs is as good
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        rendering = self._from_cache(job)
        rendering.cached, rendering.seconds = False, time.perf_counter() - start
        if rendering.seconds > self.limits.timeout_s / 2:  # said now, not cached: it is about this machine, this time
            rendering.warnings = [*rendering.warnings, f"compiling took {rendering.seconds:.1f} s of the {self.limits.timeout_s:g} s limit "
                                  "(timeout under [diagrams] in tutor.toml)"]
        return rendering

    def render_many(self, jobs: Iterable[tuple[DiagramFormat, str, bool]], workers: int | None = None,
                    progress: Callable[[Rendering], None] | None = None) -> list[Rendering]:
        from concurrent.futures import ThreadPoolExecutor

        jobs = list(jobs)
        # One per core: a compile is CPU-bound (more workers measured no faster, only noisier).
        with ThreadPoolExecutor(max_workers=workers or os.cpu_count() or 1) as pool:
            if self.precompile:
                # Build the formats the jobs will need first, side by side. Left to the jobs, the
                # first job of a format builds it (~0.5 s) while the next worker, on a job of the
                # same format, waits for it: one core idle per format. A build that fails is
                # reported by the jobs of its format, which try it again.
                needed = {fmt.name: fmt for fmt, code, standalone in jobs
                          if not standalone and not (self._entry(_Job(fmt, code, standalone).key) / "result.json").exists()}
                for fmt in needed.values():
                    pool.submit(self._format_file, fmt)
            futures = [pool.submit(self.render, fmt, code, standalone) for fmt, code, standalone in jobs]
            results = []
            for future in futures:
                results.append(future.result())
                if progress:
                    progress(results[-1])
        return results

    # --- checks before TeX ------------------------------------------------------------

    def _refuse(self, job: _Job) -> CompileError | None:
        size = len(job.code.encode())
        if size > self.limits.max_input_bytes:
            return CompileError(f"refused: the code is {size} bytes; the limit is {self.limits.max_input_bytes}")
        if unsafe := unsafe_tex(job.code):
            return unsafe
        if job.standalone:
            if "\\documentclass" not in job.code:
                return CompileError("refused: a standalone document needs \\documentclass")
            return None
        problems = job.fmt.check(job.code)
        return CompileError("refused: " + "; ".join(problems)) if problems else None

    # --- the sandboxed compile --------------------------------------------------------

    def _compile(self, job: _Job, out: Path, notes: list[str]) -> CompileError | None:
        """Compile in a private job directory; on success leave the PDF and PNG in `out`, and add to
        `notes` what the user should know about a picture that did compile."""
        document = job.code if job.standalone else job.fmt.document(job.code)
        probed = not job.standalone and POSITION_PROBE_AFTER in document
        if probed:  # our own text after \begin{document}, before the body: not the user's
            at = document.index(POSITION_PROBE_AFTER) + len(POSITION_PROBE_AFTER)
            document = f"{document[:at]}{POSITION_PROBE}\n{document[at:]}"
        given = job.code if job.standalone else job.code.strip()
        offset = document.index(given)
        offset = document[:offset].count("\n")
        fmt_args: list[str] = []
        formats_dir = None
        if self.precompile and not job.standalone:
            fmt_file = self._format_file(job.fmt)
            fmt_args, formats_dir = [f"-fmt={fmt_file.stem}"], str(fmt_file.parent)
        with tempfile.TemporaryDirectory(prefix="tutor-tex-") as tmp:
            jobdir = Path(tmp)
            (jobdir / "diagram.tex").write_text(document, encoding="utf-8")
            for attempt in range(2):  # a second pass resolves `remember picture` (chemfig's curly arrows)
                if failure := self._pdflatex(jobdir, [*fmt_args, "diagram.tex"], formats_dir):
                    return _locate(failure, given, offset)
                if attempt == 0 and not _needs_second_pass(jobdir, probed):
                    break
            log = (jobdir / "diagram.log").read_text(encoding="utf-8", errors="replace")
            pages = re.search(r"Output written on diagram\.pdf \((\d+) pages?", log)
            if not pages:
                return CompileError("the diagram produced no output (is the body empty?)")
            if int(pages.group(1)) > self.limits.max_pages:
                return CompileError(f"refused: {pages.group(1)} pages; the limit is {self.limits.max_pages}")
            if int(pages.group(1)) > 1:  # a diagram is one picture: the PNG and SVG show page 1, the PDF keeps them all
                notes.append(f"the document has {pages.group(1)} pages; the PNG and SVG show page 1 only (the PDF has every page)")
            self._convert(jobdir)
            for name in ("diagram.pdf", "diagram.png"):
                shutil.copyfile(jobdir / name, out / name)
        return None

    def _pdflatex(self, jobdir: Path, args: list[str], formats_dir: str | None, ini: bool = False, jobname: str = "diagram") -> str | None:
        """Run pdflatex in the sandbox; None on success, else the log's error text."""
        require("pdflatex")
        env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(jobdir),
            "TEXMFOUTPUT": str(jobdir),
            "TEXMFVAR": str(jobdir / ".texmf-var"),
            "shell_escape": "f",
            "openin_any": "p",
            "openout_any": "p",
            "max_print_line": "10000",  # no wrapped log lines: errors parse cleanly
        }
        if formats_dir:
            env["TEXFORMATS"] = f"{formats_dir}:"  # trailing colon: then the default path
        command = ["pdflatex", "-no-shell-escape", "-interaction=nonstopmode", "-halt-on-error", "-file-line-error",
                   *(["-ini"] if ini else []), *args]
        limits = self.limits
        process = subprocess.Popen(self.confined(command, writable=[jobdir], readable=[formats_dir] if formats_dir else []),
                                   cwd=jobdir, env=env, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE,
                                   stderr=subprocess.STDOUT, start_new_session=True)
        started = time.perf_counter()
        try:
            output, _ = process.communicate(timeout=limits.timeout_s)
        except subprocess.TimeoutExpired:
            _kill_group(process)
            return (f"stopped: pdflatex was killed after {time.perf_counter() - started:.1f} s, past the {limits.timeout_s:g} s time limit "
                    "(raise timeout under [diagrams] in tutor.toml, or pass --timeout)")
        if signame := _signal_of(process.returncode):
            reason = {"SIGXCPU": f"the {limits.cpu_s} s CPU time limit (timeout under [diagrams] in tutor.toml, or --timeout)",
                      "SIGXFSZ": "the output size limit", "SIGKILL": "a resource limit (memory or CPU time)"}.get(signame, signame)
            return f"stopped: pdflatex was stopped by {reason} after {time.perf_counter() - started:.1f} s"
        if process.returncode != 0:
            log_path = jobdir / f"{jobname}.log"
            log = log_path.read_text(encoding="utf-8", errors="replace") if log_path.exists() else output.decode(errors="replace")
            return log
        return None

    def confined(self, command: list[str], writable: list[Path], readable: list[str | Path] = ()) -> list[str]:
        """`command` under the resource limits and, where it runs, in the bubblewrap sandbox.

        prlimit sets the limits and execs the command: the same process, so its
        signals (SIGXCPU...) come back as they are. Setting them in a forked child
        (preexec_fn) is unsafe here, where many compiles start from threads.
        """
        limits = self.limits
        # CPU: SIGXCPU at the soft limit, which we can name; SIGKILL a second later, at the hard one.
        if shutil.which("prlimit"):
            prefix = ["prlimit", f"--cpu={limits.cpu_s}:{limits.cpu_s + 1}", f"--as={limits.memory_bytes}", f"--fsize={limits.file_bytes}",
                      "--core=0", "--"]
        else:  # no util-linux: the same limits set by a small Python that then execs the command
            prefix = [sys.executable, "-c", _LIMIT_AND_EXEC, str(limits.cpu_s), str(limits.memory_bytes), str(limits.file_bytes)]
        if limits.sandbox != "off" and (problem := sandbox_problem()) is None:
            prefix += bwrap_args(writable, readable)
        elif limits.sandbox == "bwrap":
            raise TutorError(f"the diagram sandbox is required (sandbox = \"bwrap\" under [diagrams]) but cannot run: {problem}")
        elif limits.sandbox == "auto":
            _warn_unsandboxed(problem)
        return [*prefix, *command]

    def _format_file(self, fmt: DiagramFormat) -> Path:
        """The precompiled format for a preamble, built once (per process and on disk)."""
        # "raw": stored uncompressed (formats of older versions were gzipped as pdflatex dumps them).
        name = "tutor-" + hashlib.sha256(f"{RENDERER_VERSION}\nraw\n{fmt.document('')}".encode()).hexdigest()[:16]
        target = self.cache_dir / "formats" / f"{name}.fmt"
        with self._lock:
            lock = self._format_locks.setdefault(name, threading.Lock())
        with lock:
            if target.exists():
                return target
            require("mylatexformat.ltx")
            with tempfile.TemporaryDirectory(prefix="tutor-fmt-") as tmp:
                jobdir = Path(tmp)
                (jobdir / "preamble.tex").write_text(fmt.document(""), encoding="utf-8")
                error = self._pdflatex(jobdir, [f"-jobname={name}", "&pdflatex", "mylatexformat.ltx", "preamble.tex"], None,
                                       ini=True, jobname=name)
                if error:
                    raise TutorError(f"diagram format {fmt.name!r}: its preamble does not compile: {_first_error(error)}")
                target.parent.mkdir(parents=True, exist_ok=True)
                # A staging name of its own: two renderers (threads of `tutor run --all`, or two processes) may build it at once.
                fd, staged_name = tempfile.mkstemp(prefix=f".{name}-", suffix=".tmp", dir=target.parent)
                os.close(fd)
                dumped, staged = jobdir / f"{name}.fmt", Path(staged_name)
                with open(dumped, "rb") as source:
                    gzipped = source.read(2) == b"\x1f\x8b"
                # pdflatex gzips what it dumps and reads either kind; a plain one loads ~60 ms sooner.
                with (gzip.open(dumped, "rb") if gzipped else open(dumped, "rb")) as source, open(staged, "wb") as sink:
                    shutil.copyfileobj(source, sink, 1 << 20)
                os.replace(staged, target)
        return target

    def _convert(self, jobdir: Path) -> None:
        """diagram.png from page 1 of diagram.pdf: pdftoppm's pixels, deflated here.

        pdftoppm -png deflates at zlib's level 9, three times the cost of rasterising; the
        same pixels from its PPM, deflated at level 6, come out as small or smaller.
        """
        require("pdftoppm")
        dpi = self.limits.png_dpi
        subprocess.run(self.confined(["pdftoppm", "-r", str(dpi), "-singlefile", "diagram.pdf", "diagram"], writable=[jobdir]),
                       cwd=jobdir, check=True, capture_output=True, timeout=self.limits.timeout_s)
        ppm = jobdir / "diagram.ppm"
        _ppm_to_png(ppm, jobdir / "diagram.png", dpi)
        ppm.unlink()

    def pdf_to_svg(self, pdf: Path, target: Path) -> None:
        """Page 1 of `pdf` as SVG, written atomically (two callers may ask at once)."""
        require("pdftocairo")
        fd, staged = tempfile.mkstemp(prefix=".svg-", suffix=".svg", dir=target.parent)
        os.close(fd)
        command = ["pdftocairo", "-svg", "-f", "1", "-l", "1", str(pdf), staged]
        try:
            subprocess.run(self.confined(command, writable=[target.parent]), check=True, capture_output=True, timeout=self.limits.timeout_s)
            os.replace(staged, target)
        finally:
            if os.path.exists(staged):
                os.unlink(staged)

    # --- the cache ----------------------------------------------------------------------

    def _entry(self, key: str) -> Path:
        return self.cache_dir / key[:2] / key

    def _from_cache(self, job: _Job) -> Rendering | None:
        entry = self._entry(job.key)
        try:
            result = json.loads((entry / "result.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return None
        if result["ok"]:
            return Rendering(job.key, job.fmt.name, True, entry / "diagram.pdf", entry / "diagram.png", cached=True,
                             renderer=self, warnings=result.get("warnings", []))
        return Rendering(job.key, job.fmt.name, False, error=CompileError(**result["error"]), cached=True)


# --- helpers -----------------------------------------------------------------------------


# --- the filter: the second layer, for where the sandbox cannot run -------------------------

# pdfTeX primitives that read or probe a file by name. kpathsea's paranoid
# setting does not cover them all: `\pdfobj file {/etc/passwd}` embeds the file
# in the PDF with shell escape off. Matched anywhere in the text, in any case
# (an expl3 alias such as \tex_pdfximage:D carries the name too).
FILE_PRIMITIVES = ("pdfobj", "pdfximage", "pdffiledump", "pdfmdfivesum", "pdffilesize", "pdffilemoddate", "pdfinclusion")
# Commands that read a file. A diagram is self-contained: it has nothing to read.
FILE_READERS = {"input", "include", "InputIfFileExists", "IfFileExists", "openin", "verbatiminput", "VerbatimInput",
                "lstinputlisting", "inputminted", "includegraphics", "includepdf", "includestandalone", "pgfimage",
                "pgfdeclareimage", "pgfplotstableread", "pdfprimitive", "primitive"}
# Ways to reach a command without writing its name: built from pieces (\csname
# pdfx\empty image\endcsname), read back with other catcodes, or through an
# alias layer (expl3, internal @-commands, etoolbox's \cs... family).
NAME_BUILDERS = {"csname", "ifcsname", "begincsname", "lastnamedcs", "scantokens", "scantextokens", "everyeof", "catcode",
                 "makeatletter", "ExplSyntaxOn", "UseName", "ExpandArgs", "NewCommandCopy", "lowercase", "uppercase"}
_ETOOLBOX_CS = re.compile(r"(?:if)?cs(?!c$)[a-z]+|[a-z]*letcs")  # \csuse, \csdef, \ifcsdef, \letcs... (not \csc)
_CONTROL_WORD = re.compile(r"\\([A-Za-z@]+)")
_CARET_HEX = re.compile(r"\^\^([0-9a-f]{2})")
_CARET_CHAR = re.compile(r"\^\^([\x00-\x7f])")


def unsafe_tex(code: str) -> CompileError | None:
    """Why untrusted TeX is refused before it runs, naming the command and its line; None if it may run."""
    text = _decode_carets(code)
    lowered = text.lower()
    for name in FILE_PRIMITIVES:
        if name in lowered:
            return _refusal(code, text, lowered.index(name), f"\\{name} is a pdfTeX file primitive: diagram code may not read files")
    for match in _CONTROL_WORD.finditer(text):
        name = match.group(1)
        if name in FILE_READERS:
            return _refusal(code, text, match.start(), f"\\{name} reads a file: diagram code may not read files")
        if name in NAME_BUILDERS or "@" in name or _ETOOLBOX_CS.fullmatch(name):
            return _refusal(code, text, match.start(), f"\\{name} can build or redefine a command's name: not allowed in diagram code")
    if text != code:
        return _refusal(code, code, code.index("^^"), "^^ character escapes are not allowed in diagram code")
    return None


def _decode_carets(code: str) -> str:
    """TeX's ^^ notation (^^5c is a backslash, ^^I a tab) decoded, as TeX would read it, until nothing changes."""
    while "^^" in code:
        decoded = _CARET_CHAR.sub(lambda m: chr(ord(m.group(1)) ^ 0x40), _CARET_HEX.sub(lambda m: chr(int(m.group(1), 16)), code))
        if decoded == code:
            break
        code = decoded
    return code


def _refusal(code: str, text: str, at: int, why: str) -> CompileError:
    line = text.count("\n", 0, at) + 1
    lines = code.splitlines()
    return CompileError(f"refused: {why}", line, lines[line - 1] if line <= len(lines) else None)


# --- the sandbox: the first layer ------------------------------------------------------------


class SandboxWarning(UserWarning):
    """Diagrams compile without bubblewrap here: only the filter and kpathsea's settings guard them."""


@cache
def sandbox_problem() -> str | None:
    """Why bubblewrap cannot run pdflatex here (not installed, no user namespaces...), or None if it can."""
    if not shutil.which("bwrap"):
        return "bubblewrap is not installed (apt-get install bubblewrap, or ./run.sh, which installs it)"
    if not shutil.which("pdflatex"):
        return None  # nothing to sandbox; require("pdflatex") names the missing package
    with tempfile.TemporaryDirectory(prefix="tutor-probe-") as tmp:
        probe = subprocess.run([*bwrap_args([Path(tmp)]), "pdflatex", "-version"], cwd=tmp, capture_output=True, text=True,
                               stdin=subprocess.DEVNULL, timeout=30)
    if probe.returncode != 0 or "pdfTeX" not in probe.stdout:
        said = " ".join((probe.stderr or probe.stdout).split())[:200] or f"exit code {probe.returncode}"
        return f"bubblewrap cannot run here ({said}); it needs unprivileged user namespaces"
    return None


@cache
def _warn_unsandboxed(problem: str) -> None:  # once per process and problem
    warnings.warn(f"diagrams compile without the file-system sandbox: {problem}. pdfTeX's file primitives are still refused "
                  "and kpathsea's paranoid settings still apply", SandboxWarning, stacklevel=2)


def bwrap_args(writable: Iterable[Path], readable: Iterable[str | Path] = ()) -> list[str]:
    """A bubblewrap command prefix: the TeX tree read-only, `writable` read-write, nothing else.

    No network, no other process, no /proc (so no /proc/<pid>/environ with API
    keys in it), no $HOME, no /etc beyond TeX's own configuration, and /tmp empty.
    """
    args = ["bwrap", "--unshare-all", "--die-with-parent", "--new-session", "--cap-drop", "ALL",
            "--ro-bind", "/usr", "/usr", "--dev", "/dev", "--tmpfs", "/tmp"]
    for top in ("/bin", "/sbin", "/lib", "/lib32", "/lib64", "/libx32"):  # merged /usr: links; else directories
        if os.path.islink(top):
            args += ["--symlink", os.readlink(top), top]
        elif os.path.isdir(top):
            args += ["--ro-bind", top, top]
    for path in (*_tex_roots(), *map(str, readable)):
        args += ["--ro-bind-try", path, path]
    for path in writable:
        args += ["--bind", str(path), str(path)]
    return [*args, "--"]


@cache
def _tex_roots() -> tuple[str, ...]:
    """Folders outside /usr that TeX reads: its configuration and generated files (Debian's /etc/texmf and
    /var/lib/texmf), a TeX Live installed under /opt, the user's own texmf tree; and the loader's cache."""
    found = {"/etc/texmf", "/var/lib/texmf", "/etc/ld.so.cache", "/etc/fonts"}
    binary = shutil.which("pdflatex")
    if binary:
        found.add(str(Path(os.path.realpath(binary)).parent))
    if shutil.which("kpsewhich"):
        for var in ("TEXMFROOT", "TEXMFDIST", "TEXMFSYSVAR", "TEXMFSYSCONFIG", "TEXMFLOCAL", "TEXMFHOME", "TEXMFCNF"):
            value = subprocess.run(["kpsewhich", f"-var-value={var}"], capture_output=True, text=True).stdout.strip()
            found.update(part for part in re.split(r"[:;,{}!]+", value) if part.startswith("/") and os.path.isdir(part))
    # Outside /usr, and not inside another folder bound already (kpsewhich names /etc/texmf/web2c too).
    outside = sorted(path for path in found if not path.startswith("/usr/"))
    return tuple(path for path in outside if not any(path.startswith(other + "/") for other in outside))


_LIMIT_AND_EXEC = ("import os, resource as r, sys; cpu, memory, size = map(int, sys.argv[1:4]); "
                   "r.setrlimit(r.RLIMIT_CPU, (cpu, cpu + 1)); r.setrlimit(r.RLIMIT_AS, (memory, memory)); "
                   "r.setrlimit(r.RLIMIT_FSIZE, (size, size)); r.setrlimit(r.RLIMIT_CORE, (0, 0)); os.execvp(sys.argv[4], sys.argv[4:])")


def _signal_of(returncode: int) -> str | None:
    """The signal that ended the process, if one did: bubblewrap reports its child's as 128 + the signal."""
    number = -returncode if returncode < 0 else returncode - 128 if 128 < returncode < 128 + 65 else None
    if number is None:
        return None
    try:
        return signal.Signals(number).name
    except ValueError:
        return f"signal {number}"



def renderer_for(workspace, timeout: float | None = None) -> Renderer:
    """The workspace's renderer: its cache, and the limits and sandbox of [diagrams] in tutor.toml."""
    cfg = workspace.config().diagrams
    seconds = timeout or cfg.timeout
    return Renderer(workspace.diagram_cache, Limits(timeout_s=seconds, cpu_s=max(1, round(seconds)), sandbox=cfg.sandbox))


def require(name: str) -> None:
    """Fail with one line naming the Debian package when a tool or TeX file is missing."""
    if name in _present:
        return
    found = shutil.which(name) if "." not in name else _kpsewhich(name)
    if not found:
        package = DEBIAN_PACKAGE.get(name, "the TeX Live package that provides it")
        raise TutorError(f"{name} is missing: install {package} (apt-get install {package}, or ./run.sh, which installs it)")
    _present.add(name)


_present: set[str] = set()


def require_format(fmt: DiagramFormat) -> None:
    """Check up front that every package a format's preamble loads is installed."""
    require("pdflatex")
    for name in ["standalone.cls", *tex_files(fmt.preamble)]:
        require(name)


def tex_files(preamble: str) -> list[str]:
    files = []
    for group in re.findall(r"\\usepackage(?:\[[^\]]*\])?\{([^}]*)\}", preamble):
        files += [f"{name.strip()}.sty" for name in group.split(",") if name.strip()]
    return files


def _kpsewhich(name: str) -> str | None:
    if not shutil.which("kpsewhich"):
        return None
    result = subprocess.run(["kpsewhich", name], capture_output=True, text=True)
    return result.stdout.strip() or None


def _kill_group(process: subprocess.Popen) -> None:
    try:
        os.killpg(process.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    process.communicate()


# Put after \begin{document} of a body's document (our own text, not the user's): logs
# whether the first pass read a picture position, which it can only have read as unknown.
# TikZ records where every `remember picture` lies (chemfig remembers all its
# pictures) and tells LaTeX to rerun whenever one is new, yet only a picture that
# reads another's position (\chemmove, \polymerdelim, `current page`, tikzmark)
# comes out different on a second pass. Global: standalone typesets the body in a
# group that closes before \end{document} rereads the .aux. One line, ending in %,
# so it typesets nothing.
POSITION_READ = "tutor: a picture position was read"
POSITION_PROBE = (
    r"\makeatletter\ifdefined\pgfsys@getposition"
    r"\global\let\tutor@getposition\pgfsys@getposition"
    rf"\gdef\pgfsys@getposition{{\immediate\write-1{{{POSITION_READ}}}"
    r"\global\let\pgfsys@getposition\tutor@getposition\pgfsys@getposition}"
    r"\gdef\pgfutil@check@rerun#1#2{}\fi\makeatother%"
)
POSITION_PROBE_AFTER = "\\begin{document}\n"


def _needs_second_pass(jobdir: Path, probed: bool = False) -> bool:
    """Whether a second pdflatex run would change the picture.

    With the probe in the document: where the first pass read a picture position
    (all unknown then: no .aux yet), or LaTeX says "Rerun" for labels and references.
    Without (a standalone document, whose preamble is the user's): wherever TikZ
    recorded a position, as a picture might read it.
    """
    aux = (jobdir / "diagram.aux").read_text(errors="replace") if (jobdir / "diagram.aux").exists() else ""
    log = (jobdir / "diagram.log").read_text(errors="replace") if (jobdir / "diagram.log").exists() else ""
    if probed:
        return POSITION_READ in log or "Rerun to get" in log
    return "\\pgfsyspdfmark" in aux or "Rerun to get" in log


def _ppm_to_png(ppm: Path, png: Path, dpi: int) -> None:
    """An 8-bit RGB PNG of a binary PPM (pdftoppm's), read and deflated a band of rows at a time."""
    with open(ppm, "rb") as source:
        head = source.read(64)
        m = re.match(rb"P6\s+(\d+)\s+(\d+)\s+255\s", head)
        if not m:
            raise TutorError(f"pdftoppm wrote no picture we can read ({head[:16]!r})")
        width, height = int(m.group(1)), int(m.group(2))
        source.seek(m.end())
        stride, band = 3 * width, max(1, (1 << 20) // (3 * width + 1))
        deflate, idat = zlib.compressobj(6), []
        for top in range(0, height, band):
            rows = source.read(stride * min(band, height - top))
            if len(rows) != stride * min(band, height - top):
                raise TutorError("pdftoppm wrote a truncated picture")
            idat.append(deflate.compress(b"".join(b"\0" + rows[i:i + stride] for i in range(0, len(rows), stride))))
        idat.append(deflate.flush())

    def chunk(kind: bytes, data: bytes) -> bytes:
        return len(data).to_bytes(4, "big") + kind + data + zlib.crc32(kind + data).to_bytes(4, "big")

    per_metre = int(dpi / 0.0254)  # as pdftoppm writes it
    png.write_bytes(b"\x89PNG\r\n\x1a\n"
                    + chunk(b"IHDR", width.to_bytes(4, "big") + height.to_bytes(4, "big") + bytes([8, 2, 0, 0, 0]))
                    + chunk(b"pHYs", per_metre.to_bytes(4, "big") * 2 + b"\x01")
                    + chunk(b"IDAT", b"".join(idat))
                    + chunk(b"IEND", b""))


def _first_error(log: str) -> str:
    if log.startswith("stopped:"):
        return log
    for line in log.splitlines():
        if m := re.match(r"^(?:\S+\.(?:tex|sty|cls|code\.tex)):\d+: (.*)", line):
            return m.group(1).strip()
        if line.startswith("! ") or line.startswith("!pdfTeX error"):  # pdfTeX's own errors have no space
            return line[1:].strip()
    last = [line.strip() for line in log.splitlines() if line.strip()][-1:] or ["no output"]
    return f"pdflatex failed without a TeX error; it said: {last[0][:200]}"


def _locate(log: str, code: str, offset: int) -> CompileError:
    """The first error, mapped back to a line of the code as the user gave it."""
    message = _first_error(log)
    if log.startswith("stopped:"):
        return CompileError(message)
    if m := re.search(r"File `([^']+)' not found", message):
        name = m.group(1)
        if name.startswith(("/", "~")) or ".." in name or name.startswith("."):
            # kpathsea's paranoid setting (and the sandbox) hide it: it may well exist.
            message = f"refused: {name} is outside the diagram's job directory: diagram code may read only TeX's own files"
        elif name.endswith((".sty", ".cls")):
            package = DEBIAN_PACKAGE.get(name)
            message += f" (a missing package{f': install {package}' if package else ''})"
    line = None
    if m := re.search(r"^\./diagram\.tex:(\d+):", log, re.MULTILINE):
        line = int(m.group(1))
    elif m := re.search(r"^l\.(\d+) ", log, re.MULTILINE):
        line = int(m.group(1))
    code_lines = code.splitlines()
    if missing := re.search(r"File `([^']+?)(?:\.sty|\.cls)?' not found", message):
        # TeX notices a missing package a line late; point at the line that loads it.
        loading = [n for n, text in enumerate(code_lines, start=offset + 1) if missing.group(1) in text]
        line = loading[0] if loading else line
    if line is not None and 0 < line - offset <= len(code_lines):
        return CompileError(message, line - offset, code_lines[line - offset - 1])
    return CompileError(message)


# --- the diagram stage over records ------------------------------------------------------


def extract_requests(kit, answers, questions) -> tuple[list, int]:
    """DIAGRAM markers of gold answers as diagram requests, one per (format, description).

    Returns the requests and the number of markers read. The format is chosen
    from each description and its question's type (SubjectKit.format_for).
    """
    from .models import DiagramRequest, normalise_text

    by_id = {q.id: q for q in questions}
    requests: dict[tuple[str, str], DiagramRequest] = {}
    markers = 0
    for answer in answers:
        question = by_id.get(answer.question_id)
        qtype = kit.types.get(question.type) if question else None
        for marker in answer.diagrams:
            markers += 1
            fmt = kit.format_for(marker.description, qtype)
            key = (fmt.name, normalise_text(marker.description).lower())
            request = requests.setdefault(key, DiagramRequest(description=marker.description, format=fmt.name))
            if answer.question_id not in request.question_ids:
                request.question_ids.append(answer.question_id)
    return list(requests.values()), markers


SLUG_WORDS = 8  # of a description, in a picture's file name: enough to tell two pictures of one question apart


def picture_names(diagrams) -> list[str]:
    """A file name (no suffix) for each diagram's picture: `<question_id>-<slug of the description>`.

    A person looking through a folder of pictures finds them by question and
    by what they show, not by content hash. A diagram without a question is
    named by its format. Names are unique within the list: a repeat gets -2, -3...
    """
    names, taken = [], set()
    for diagram in diagrams:
        words = re.findall(r"[a-z0-9]+", diagram.description.lower())[:SLUG_WORDS]
        base = f"{diagram.question_id or diagram.format}-{'-'.join(words) or 'diagram'}"
        name, n = base, 1
        while name in taken:
            n += 1
            name = f"{base}-{n}"
        taken.add(name)
        names.append(name)
    return names
