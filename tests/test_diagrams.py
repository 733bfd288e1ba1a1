"""The renderer, against real pdflatex: behaviour, the sandbox, and the cache."""

import contextlib
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import uuid
import zlib
from pathlib import Path

import pytest
import tutor.diagrams as tutor_diagrams
from click.testing import CliRunner
from tutor.cli import cli
from tutor.diagrams import Limits, Renderer, SandboxWarning, renderer_for, require_format, sandbox_problem, unsafe_tex
from tutor.errors import TutorError
from tutor.registry import registry
from tutor.workspace import Workspace

PICTURE = "\\begin{tikzpicture}\n  \\draw[->] (0,0) -- (2,1) node[right] {$F$};\n\\end{tikzpicture}"


@pytest.fixture
def tikz():
    return registry().formats["tikz"]


@pytest.fixture
def renderer(tmp_path):
    return Renderer(tmp_path / "cache", Limits(timeout_s=15, cpu_s=15))


def pdf_text(path):
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


def tex_part(command):
    """The pdflatex command inside the limits and sandbox prefixes, or None for another program."""
    return command[command.index("pdflatex"):] if "pdflatex" in command else None


@pytest.fixture
def pdflatex_runs(monkeypatch):
    """The pdflatex commands run from here on (format builds left out)."""
    runs = []
    real = subprocess.Popen

    def spy(command, **kwargs):
        if (tex := tex_part(command)) and "-ini" not in tex:
            runs.append(tex)
        return real(command, **kwargs)

    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", spy)
    return runs


def test_a_body_renders_to_pdf_png_and_svg(renderer, tikz, monkeypatch):
    result = renderer.render(tikz, PICTURE)
    assert result.ok and not result.cached
    assert result.png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not result.pdf.with_name("diagram.svg").exists()  # made on first request only
    assert "<svg" in result.svg.read_text()
    assert "F" in pdf_text(result.pdf)
    monkeypatch.setattr("tutor.diagrams.subprocess.run", lambda *a, **k: pytest.fail("converted again"))
    assert renderer.render(tikz, PICTURE).svg == result.svg  # kept in the cache entry


def png_pixels(path):
    """The RGB rows of a PNG that we wrote (8-bit RGB, filter 0 on every row)."""
    data, at, idat = path.read_bytes(), 8, b""
    while at < len(data):
        size, kind = int.from_bytes(data[at:at + 4], "big"), data[at + 4:at + 8]
        if kind == b"IHDR":
            width, height = int.from_bytes(data[at + 8:at + 12], "big"), int.from_bytes(data[at + 12:at + 16], "big")
            assert data[at + 16:at + 21] == bytes([8, 2, 0, 0, 0])
        idat += data[at + 8:at + 8 + size] if kind == b"IDAT" else b""
        at += 12 + size
    rows = zlib.decompress(idat)
    stride = 3 * width + 1
    assert len(rows) == height * stride and all(rows[y * stride] == 0 for y in range(height))
    return width, height, b"".join(rows[y * stride + 1:(y + 1) * stride] for y in range(height))


def test_the_png_holds_exactly_pdftoppms_pixels(renderer, tikz, tmp_path):
    result = renderer.render(tikz, PICTURE)
    subprocess.run(["pdftoppm", "-r", "150", "-singlefile", str(result.pdf), str(tmp_path / "ref")], check=True)
    header, _, _, pixels = (tmp_path / "ref.ppm").read_bytes().split(b"\n", 3)
    width, height = map(int, (tmp_path / "ref.ppm").read_bytes().split(b"\n", 2)[1].split())
    assert header == b"P6" and png_pixels(result.png) == (width, height, pixels)


def test_the_same_code_never_compiles_twice(renderer, tikz, monkeypatch):
    first = renderer.render(tikz, PICTURE)
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("compiled again"))
    again = renderer.render(tikz, PICTURE)
    assert again.cached and again.png == first.png
    assert Renderer(renderer.cache_dir).render(tikz, PICTURE).cached  # and not in another process either


def test_errors_are_concise_and_point_at_the_line_of_code(renderer, tikz):
    result = renderer.render(tikz, "\\begin{tikzpicture}\n  \\draw (0,0) -- (1,1);\n  \\drwa (0,0) circle (1);\n\\end{tikzpicture}")
    assert not result.ok
    assert (result.error.line, result.error.message, result.error.code_line) == (3, "Undefined control sequence.",
                                                                                  "  \\drwa (0,0) circle (1);")
    assert str(result.error) == "line 3: Undefined control sequence.\n    \\drwa (0,0) circle (1);"
    assert result.error.for_repair().startswith("The code did not compile at line 3 of your code:\n"
                                                "    \\drwa (0,0) circle (1);\npdflatex said: Undefined")
    # errors are cached too
    assert renderer.render(tikz, "\\begin{tikzpicture}\n  \\draw (0,0) -- (1,1);\n  \\drwa (0,0) circle (1);\n\\end{tikzpicture}").cached


def test_a_standalone_document_goes_through_the_same_sandbox(renderer, tikz):
    document = ("\\documentclass{standalone}\n\\usepackage{tikz}\n\\begin{document}\n"
                "\\tikz \\draw (0,0) circle (1);\n\\oops\n\\end{document}\n")
    result = renderer.render(tikz, document, standalone=True)
    assert (result.error.line, result.error.code_line) == (5, "\\oops")
    assert renderer.render(tikz, document.replace("\\oops\n", ""), standalone=True).ok


CHEMFIG_PAIR = "\\chemfig{@{a}A-B}\\hspace{1cm}\\chemfig{@{b}C}"
CURLY_ARROW = CHEMFIG_PAIR + "\n\\chemmove{\\draw[->](a)..controls +(90:1cm)..(b);}"


@pytest.fixture
def chemfig():
    fmt = registry().formats.get("chemfig")
    if fmt is None:
        pytest.skip("tutor-chemistry is not installed")
    return fmt


def test_chemfig_curly_arrows_get_their_second_pass(renderer, chemfig, pdflatex_runs, tmp_path, monkeypatch):
    result = renderer.render(chemfig, CURLY_ARROW)
    assert result.ok, result.error
    assert len(pdflatex_runs) == 2
    monkeypatch.setattr("tutor.diagrams._needs_second_pass", lambda *a, **k: False)
    one_pass = Renderer(tmp_path / "one-pass").render(chemfig, CURLY_ARROW)
    assert one_pass.png.read_bytes() != result.png.read_bytes()  # the arrow is misplaced after one run


@pytest.mark.parametrize("code", [
    CHEMFIG_PAIR,  # chemfig remembers where every picture lies, but nothing reads it back
    "\\begin{tabular}{c}\\chemfig{C(-[2]H)=C(-[6]H)-H}\\\\[2pt] ethene\n\\end{tabular}",
])
def test_pictures_that_read_no_position_compile_once_and_come_out_the_same(renderer, chemfig, code, pdflatex_runs, tmp_path, monkeypatch):
    result = renderer.render(chemfig, code)
    assert result.ok and len(pdflatex_runs) == 1
    monkeypatch.setattr("tutor.diagrams._needs_second_pass", lambda *a, **k: True)
    twice = Renderer(tmp_path / "twice").render(chemfig, code)
    assert len(pdflatex_runs) == 3
    assert twice.png.read_bytes() == result.png.read_bytes() and pdf_text(twice.pdf) == pdf_text(result.pdf)


@pytest.mark.parametrize("code", [
    # a TikZ picture that points into another, and a reference to a label set after it
    "\\tikz[remember picture]\\node(a){A};\\quad\n\\begin{tikzpicture}[remember picture]\\draw[->](0,0)--(a);\\end{tikzpicture}",
    "\\begin{tikzpicture}\\node{see \\ref{here}};\\end{tikzpicture}\\refstepcounter{equation}\\label{here}",
])
def test_a_position_or_reference_read_before_it_is_known_gets_a_second_pass(renderer, tikz, code, pdflatex_runs):
    result = renderer.render(tikz, code)
    assert result.ok, result.error
    assert len(pdflatex_runs) == 2


def test_precompiled_preamble_and_plain_compile_agree(tmp_path, tikz):
    fast = Renderer(tmp_path / "fast").render(tikz, PICTURE)
    plain = Renderer(tmp_path / "plain", precompile=False).render(tikz, PICTURE)
    assert fast.ok and plain.ok
    assert pdf_text(fast.pdf) == pdf_text(plain.pdf)
    assert (tmp_path / "fast" / "formats").is_dir() and not (tmp_path / "plain" / "formats").exists()
    (fmt_file,) = (tmp_path / "fast" / "formats").glob("*.fmt")
    assert fmt_file.read_bytes()[:2] != b"\x1f\x8b"  # stored uncompressed: it loads faster
    assert fast.png.read_bytes() == plain.png.read_bytes()


def test_many_at_once_build_each_format_once_and_keep_the_order(tmp_path, tikz, monkeypatch):
    commands, real = [], subprocess.Popen

    def spy(command, **kwargs):
        if tex := tex_part(command):
            commands.append(tex)
        return real(command, **kwargs)

    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", spy)
    axes = tikz.model_copy(update={"name": "axes", "preamble": tikz.preamble + "\n\\tikzset{every picture/.style={thick}}"})
    jobs = [(tikz, PICTURE, False), (tikz, PICTURE.replace("$F$", "$G$"), False), (axes, PICTURE, False), (axes, "\\oops", False)]
    renderer = Renderer(tmp_path / "cache")
    results = renderer.render_many(jobs, workers=2)
    assert [(r.format, r.ok) for r in results] == [("tikz", True), ("tikz", True), ("axes", True), ("axes", False)]
    builds = [c for c in commands if "-ini" in c]
    assert "G" in pdf_text(results[1].pdf) and len(builds) == 2
    assert commands[:2] == builds  # both formats first, side by side, not the second when its first job comes
    assert all(r.cached for r in renderer.render_many(jobs[:3], workers=2)) and len(commands) == 5  # nothing built or compiled again

    broken = tikz.model_copy(update={"name": "broken", "preamble": "\\usepackage{tikz}\\oops"})
    with pytest.raises(TutorError, match="diagram format 'broken': its preamble does not compile"):
        renderer.render_many([(tikz, PICTURE, False), (broken, PICTURE, False)], workers=2)


def test_missing_system_package_is_one_line_naming_it(tikz):
    broken = tikz.model_copy(update={"name": "broken", "preamble": "\\usepackage{nosuchpackage-tutor}"})
    with pytest.raises(TutorError, match=r"^nosuchpackage-tutor\.sty is missing: install the TeX Live package that provides it"):
        require_format(broken)
    require_format(tikz)  # everything the core's format needs is installed


# --- security: every one of these is untrusted model output ---------------------------
#
# Two layers, each tested alone: the sandbox (bubblewrap: nothing outside the TeX
# tree and the job directory exists) and the filter (pdfTeX's file primitives and
# file-reading commands refused before TeX starts). A leak is looked for in
# everything the renderer leaves or writes: every PDF stream inflated, the SVG,
# the PNG, the logs and files of every job directory, and the whole cache.


@pytest.fixture
def secret(tmp_path_factory):
    """Files outside any job directory whose contents must never come back: one in /tmp
    and one in /var/tmp (the sandbox's /tmp is empty, so both kinds are worth trying)."""
    token = f"SECRET{uuid.uuid4().hex}"
    outside = tmp_path_factory.mktemp("outside")
    var_tmp = Path(tempfile.mkdtemp(prefix="tutor-test-secret-", dir="/var/tmp"))
    files = {"tmp": outside / "secret.tex", "var": var_tmp / "secret.tex"}
    for path in files.values():
        path.write_text(token + "\n" + "x" * 7900)  # a size (7943 bytes) that is easy to spot
    pdf = _secret_pdf(var_tmp, token)
    yield {"token": token, "files": files, "pdf": pdf, "size": str(files["var"].stat().st_size)}
    shutil.rmtree(var_tmp, ignore_errors=True)


def _secret_pdf(folder, token):
    (folder / "doc.tex").write_text(f"\\documentclass{{article}}\\begin{{document}}{token}\\end{{document}}")
    subprocess.run(["pdflatex", "-interaction=nonstopmode", "doc.tex"], cwd=folder, capture_output=True, check=True)
    return folder / "doc.pdf"


@pytest.fixture
def jobdirs(tmp_path, monkeypatch):
    """Keep every job directory the renderer makes (they hold the logs), to scan them afterwards."""
    kept = tmp_path / "jobdirs"
    kept.mkdir()

    @contextlib.contextmanager
    def keep(prefix="tmp", **_):
        yield tempfile.mkdtemp(prefix=prefix, dir=kept)

    monkeypatch.setattr("tutor.diagrams.tempfile.TemporaryDirectory", keep)
    return kept


def inflated_streams(data: bytes):
    for match in re.finditer(rb"stream\r?\n", data):
        try:
            yield zlib.decompressobj().decompress(data[match.end():])
        except zlib.error:
            continue


def everything_written(renderer, result, jobdirs) -> str:
    """All the text a leak could hide in, as one string (bytes read as latin-1)."""
    parts = [str(result.error or "")]
    if result.ok:
        parts += [pdf_text(result.pdf), result.svg.read_text(errors="replace")]
    for folder in (renderer.cache_dir, jobdirs):
        for path in Path(folder).rglob("*"):
            if path.is_file() and path.suffix != ".fmt":  # formats: our own preambles, 10 MB each
                data = path.read_bytes()
                parts.append(data.decode("latin-1"))
                if path.suffix == ".pdf":
                    parts += [stream.decode("latin-1") for stream in inflated_streams(data)]
    return "\n".join(parts)


def leaks(renderer, result, jobdirs, secret, planted_env) -> list[str]:
    text = everything_written(renderer, result, jobdirs)
    token = secret["token"]
    signs = {"the secret": token, "its hex dump": token.encode().hex().upper(),
             "its MD5": hashlib.md5(secret["files"]["var"].read_bytes()).hexdigest().upper(),
             "its size": f"SZ{secret['size']}ZS", "its date": "MDD:", "/etc/passwd": "root:x:0:0", "the environment": planted_env}
    return [what for what, sign in signs.items() if sign in text or sign.lower() in text]


def attacks(secret, pid):
    """(name, code, standalone): ways to read a file, each as untrusted diagram code."""
    s, pdf = secret["files"], secret["pdf"]
    show = "\\pdfrefobj\\pdflastobj"
    picture = "\\begin{tikzpicture}\\node{x};\\end{tikzpicture}\n"
    bodies = {
        "pdfobj file": f"\\immediate\\pdfobj file {{{s['var']}}}{show}",
        "pdfobj file /tmp": f"\\immediate\\pdfobj file {{{s['tmp']}}}{show}",
        "pdfobj stream file": f"\\immediate\\pdfobj stream file {{{s['var']}}}{show}",
        "pdfobj /etc/passwd": f"\\immediate\\pdfobj stream file {{/etc/passwd}}{show}",
        "pdfobj environ": f"\\immediate\\pdfobj stream file {{/proc/{pid}/environ}}{show}",
        "pdfximage": f"\\pdfximage{{{pdf}}}\\pdfrefximage\\pdflastximage",
        "pdffiledump": f"\\message{{\\pdffiledump length 200 {{{s['var']}}}}}",
        "pdfmdfivesum": f"\\message{{\\pdfmdfivesum file {{{s['var']}}}}}",
        "pdffilesize": f"\\message{{SZ\\pdffilesize{{{s['var']}}}ZS}}",
        "pdffilemoddate": f"\\message{{MD\\pdffilemoddate{{{s['var']}}}DM}}",
        "pdfinclusion": f"\\pdfinclusioncopyfonts=1 \\pdfximage{{{pdf}}}\\pdfrefximage\\pdflastximage",
        "csname": f"\\immediate\\csname pdfobj\\endcsname stream file {{{s['var']}}}{show}",
        "csname pieces": f"\\immediate\\csname pdf\\empty obj\\endcsname stream file {{{s['var']}}}{show}",
        "caret escapes": f"\\immediate\\pdf^^6fbj stream file {{{s['var']}}}{show}",
        "catcode": f"\\catcode`\\|=0 |immediate|pdfobj stream file {{{s['var']}}}{show}",
        "input": f"\\input{{{s['var']}}}",
        "input relative": "\\input{" + "../" * 12 + str(s["var"]).lstrip("/") + "}",
        "openin": f"\\newread\\r\\immediate\\openin\\r={s['var']} \\immediate\\read\\r to\\x \\message{{\\x}}",
        "includegraphics": f"\\includegraphics{{{pdf}}}",
    }
    cases = [(name, picture + code, False) for name, code in bodies.items()]
    document = "\\documentclass{{standalone}}\n\\usepackage{{graphicx,verbatim,listings}}\n\\begin{{document}}\n{}\n\\end{{document}}"
    cases += [(f"standalone {name}", document.format(code), True) for name, code in [
        ("pdfobj file", f"x\\immediate\\pdfobj file {{{s['var']}}}{show}"),
        ("pdfximage", f"\\pdfximage{{{pdf}}}\\pdfrefximage\\pdflastximage"),
        ("verbatiminput", f"\\verbatiminput{{{s['var']}}}"),
        ("lstinputlisting", f"\\lstinputlisting{{{s['var']}}}"),
        ("includegraphics", f"\\includegraphics{{{pdf}}}"),
    ]]
    return cases


LAYERS = {"both": "auto", "sandbox only": "bwrap", "filter only": "off"}


@pytest.mark.parametrize("layers", list(LAYERS))
def test_no_attack_reads_a_file_with_either_layer_alone(tmp_path, tikz, secret, jobdirs, layers, monkeypatch):
    if layers != "filter only" and (problem := sandbox_problem()):
        pytest.skip(f"bubblewrap cannot run here: {problem}")
    if layers == "sandbox only":
        monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)
    planted = f"PLANTED{uuid.uuid4().hex}"
    monkeypatch.setenv("TUTOR_TEST_PLANTED", planted)  # in this process's /proc/<pid>/environ
    failures = []
    for name, code, standalone in attacks(secret, os.getpid()):
        renderer = Renderer(tmp_path / f"cache-{len(failures)}-{uuid.uuid4().hex[:6]}",
                            Limits(timeout_s=20, cpu_s=20, sandbox=LAYERS[layers]))
        result = renderer.render(tikz, code, standalone)
        if found := leaks(renderer, result, jobdirs, secret, planted):
            failures.append(f"{name}: leaked {found}")
        if layers == "filter only" and not (result.error and result.error.message.startswith("refused:")):
            failures.append(f"{name}: not refused ({result.error})")
    assert not failures


def test_the_leak_check_finds_a_leak_when_both_layers_are_off(tmp_path, tikz, secret, jobdirs, monkeypatch):
    """The check above can fail: with the filter and the sandbox both off, pdfTeX embeds the file."""
    monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)
    renderer = Renderer(tmp_path / "cache", Limits(sandbox="off"))
    code = (f"\\begin{{tikzpicture}}\\node{{x}};\\end{{tikzpicture}}"
            f"\\immediate\\pdfobj stream file {{{secret['files']['var']}}}\\pdfrefobj\\pdflastobj")
    result = renderer.render(tikz, code)
    assert result.ok
    assert secret["token"] not in result.pdf.read_bytes().decode("latin-1")  # compressed: a plain scan misses it
    assert leaks(renderer, result, jobdirs, secret, f"PLANTED{uuid.uuid4().hex}") == ["the secret"]


@pytest.mark.parametrize("code, named", [
    ("\\immediate\\pdfobj file {/etc/passwd}", "\\pdfobj is a pdfTeX file primitive"),
    ("\\draw (0,0) -- (1,1);\n\\pdfximage{/etc/hostname}", "\\pdfximage is a pdfTeX file primitive"),
    ("\\input{/etc/passwd}", "\\input reads a file"),
    ("\\csname pdf\\empty obj\\endcsname", "\\csname can build or redefine a command's name"),
    ("\\makeatletter\\@nameuse{x}", "\\makeatletter can build"),
    ("\\UseName{pdfx\\empty image}", "\\UseName can build"),
    ("\\csuse{x}", "\\csuse can build"),
    ("\\pdf^^78image{a}", "\\pdfximage is a pdfTeX file primitive"),
    ("^^5cinput{a}", "\\input reads a file"),
    ("\\ExplSyntaxOn \\tex_pdfobj:D", "\\pdfobj is a pdfTeX file primitive"),
])
def test_the_filter_names_the_command_and_its_line(renderer, tikz, code, named, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("TeX was started"))
    body = "\\begin{tikzpicture}\n" + code + "\n\\end{tikzpicture}"
    result = renderer.render(tikz, body)
    assert result.error.message.startswith(f"refused: {named}")
    assert result.error.line == 2 + code.count("\n")  # the line that names it


@pytest.mark.parametrize("code", [
    "\\begin{tikzpicture}\\node {$\\csc\\theta = \\frac{1}{\\sin\\theta}$};\\end{tikzpicture}",
    "\\begin{tikzpicture}\\draw (0,0) -- (1,0) node[right] {input};\\node at (0,1) {pdf file};\\end{tikzpicture}",
])
def test_the_filter_lets_ordinary_diagrams_through(renderer, tikz, code):
    assert unsafe_tex(code) is None
    assert renderer.render(tikz, code).ok


def test_a_refused_code_is_refused_even_when_an_older_cache_holds_it(renderer, tikz, monkeypatch):
    code = "\\begin{tikzpicture}\\node{x};\\end{tikzpicture}\\immediate\\pdfobj stream file {/etc/hostname}\\pdfrefobj\\pdflastobj"
    monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)
    assert renderer.render(tikz, code).ok is False or True  # whatever it did, it is cached now
    monkeypatch.undo()
    assert renderer.render(tikz, code).error.message.startswith("refused:")


def test_every_program_runs_in_the_sandbox_under_limits(renderer, tikz, monkeypatch):
    if problem := sandbox_problem():
        pytest.skip(f"bubblewrap cannot run here: {problem}")
    seen, real_popen, real_run = [], subprocess.Popen, subprocess.run

    def popen(command, **kwargs):
        seen.append(command)
        return real_popen(command, **kwargs)

    def run_(command, **kwargs):
        seen.append(command)
        return real_run(command, **kwargs)

    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", popen)
    monkeypatch.setattr("tutor.diagrams.subprocess.run", run_)
    result = renderer.render(tikz, PICTURE.replace("F", "H"))
    assert result.svg.exists()
    programs = {c[c.index("--", c.index("bwrap")) + 1] for c in seen if "bwrap" in c}
    assert programs == {"pdflatex", "pdftoppm", "pdftocairo"}  # the format build, the compile, both conversions
    for command in seen:
        assert command[0] == "prlimit" and "--cpu=15:16" in command and "bwrap" in command
        sandbox = command[command.index("bwrap"):]
        binds = [sandbox[i + 1] for i, arg in enumerate(sandbox) if arg in ("--bind", "--ro-bind", "--ro-bind-try")]
        assert not [b for b in binds if b in ("/", "/etc", "/home", "/root", "/proc", "/var", "/tmp") or b == str(Path.home())]
        assert "--unshare-all" in sandbox and "--share-net" not in sandbox


def test_without_bubblewrap_it_says_so_once_and_the_filter_still_refuses(tmp_path, tikz, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.sandbox_problem", lambda: "bubblewrap is not installed (test)")
    tutor_diagrams._warn_unsandboxed.cache_clear()
    renderer = Renderer(tmp_path / "cache")
    with pytest.warns(SandboxWarning, match="without the file-system sandbox: bubblewrap is not installed") as caught:
        assert renderer.render(tikz, PICTURE).ok
        assert renderer.render(tikz, PICTURE.replace("F", "K")).ok
        assert renderer.render(tikz, body("\\pdfximage{/etc/passwd}")).error.message.startswith("refused:")
    assert len([w for w in caught if issubclass(w.category, SandboxWarning)]) == 1
    required = Renderer(tmp_path / "strict", Limits(sandbox="bwrap"))
    with pytest.raises(TutorError, match="the diagram sandbox is required"):
        required.render(tikz, PICTURE.replace("F", "L"))


def body(inject):
    return f"\\begin{{tikzpicture}}\\node {{x}};\\end{{tikzpicture}}\n{inject}"


def test_write18_is_refused_by_tex_and_creates_nothing(renderer, tikz, tmp_path, jobdirs):
    marker = tmp_path / "pwned"
    for code, standalone in [(body(f"\\immediate\\write18{{touch {marker}}}"), False),
                             (f"\\documentclass{{article}}\\begin{{document}}"
                              f"\\immediate\\write18{{touch {marker}}}x\\end{{document}}", True)]:
        assert renderer.render(tikz, code, standalone).ok
    assert not marker.exists()
    logs = [path.read_text(errors="replace") for path in jobdirs.rglob("diagram.log")]
    assert len(logs) == 2 and all(f"runsystem(touch {marker})...disabled" in log for log in logs)  # TeX got there, and said no


def test_openout_writes_nothing_outside_the_job_directory(renderer, tikz, tmp_path, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)  # \openout is not filtered: the sandbox and kpathsea stop it
    outside = tmp_path / f"evil-{uuid.uuid4().hex}.txt"
    for target in [str(outside), "../" * 12 + str(outside).lstrip("/")]:
        renderer.render(tikz, body(f"\\immediate\\openout5={target}\\immediate\\write5{{x}}\\immediate\\closeout5"))
    assert not outside.exists()


def test_piped_input_and_directlua_run_nothing(renderer, tikz, tmp_path, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)  # TeX itself must refuse these
    marker = tmp_path / "ran"
    for inject in [f'\\input|"touch {marker}"', f"\\directlua{{os.execute('touch {marker}')}}"]:
        result = renderer.render(tikz, body(inject))
        assert not result.ok
    assert not marker.exists()


def test_never_lualatex_and_always_the_sandbox_flags(renderer, tikz, monkeypatch):
    seen = []
    real = subprocess.Popen

    def spy(command, **kwargs):
        seen.append((command, kwargs.get("env")))
        return real(command, **kwargs)

    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", spy)
    renderer.render(tikz, PICTURE.replace("F", "G"))
    assert not [c for c, _ in seen if any(os.path.basename(part).startswith("lua") for part in c)]
    tex = [(tex_part(c), env) for c, env in seen if tex_part(c)]
    assert tex
    for command, env in tex:
        assert command[0] == "pdflatex" and "-no-shell-escape" in command and "-halt-on-error" in command
        assert (env["shell_escape"], env["openin_any"], env["openout_any"]) == ("f", "p", "p")


def test_infinite_loops_and_page_floods_are_stopped_and_the_next_render_works(tmp_path, tikz):
    renderer = Renderer(tmp_path / "cache", Limits(timeout_s=4, cpu_s=4, max_pages=8))
    loop = renderer.render(tikz, body("\\def\\a{\\a}\\a"))
    assert not loop.ok and loop.error.message.startswith("stopped:")
    assert re.search(r"after \d+\.\d s", loop.error.message)  # says how long it ran
    flood = ("\\documentclass{article}\\begin{document}"
             "\\newcount\\n\\loop\\null\\newpage\\advance\\n 1 \\ifnum\\n<100000 \\repeat\\end{document}")
    result = renderer.render(tikz, flood, standalone=True)
    assert not result.ok and result.error.message.startswith(("stopped:", "refused:"))
    assert renderer.render(tikz, PICTURE).ok


def test_without_prlimit_the_limits_are_set_by_an_exec_wrapper_not_in_a_forked_child(tmp_path, tikz, monkeypatch):
    real_which, seen, real = shutil.which, [], subprocess.Popen
    monkeypatch.setattr("tutor.diagrams.shutil.which", lambda name: None if name == "prlimit" else real_which(name))

    def spy(command, **kwargs):
        assert "preexec_fn" not in kwargs  # unsafe in threads
        seen.append(command)
        return real(command, **kwargs)

    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", spy)
    renderer = Renderer(tmp_path / "cache", Limits(timeout_s=10, cpu_s=2))
    loop = renderer.render(tikz, body("\\def\\a{\\a}\\a"))
    assert loop.error.message.startswith("stopped: pdflatex was stopped by the 2 s CPU time limit")
    assert seen and all(command[:2] == [sys.executable, "-c"] for command in seen)
    assert renderer.render(tikz, PICTURE).ok


def test_the_time_limit_is_a_setting_and_hitting_it_says_so(tmp_path, tikz):
    workspace = Workspace(tmp_path / "ws")
    workspace.root.mkdir()
    workspace.config_path.write_text("[diagrams]\ntimeout = 2.5\n")
    renderer = renderer_for(workspace)
    assert (renderer.limits.timeout_s, renderer.limits.cpu_s) == (2.5, 2)
    loop = renderer.render(tikz, body("\\def\\a{\\a}\\a"))
    assert "timeout under [diagrams]" in loop.error.message or "CPU time limit" in loop.error.message
    assert renderer_for(workspace, timeout=7).limits.timeout_s == 7


def test_a_multi_page_document_warns_that_only_page_one_is_shown(renderer, tikz):
    result = renderer.render(tikz, "\\documentclass{article}\\begin{document}one\\newpage two\\newpage three\\end{document}",
                             standalone=True)
    assert result.ok and result.warnings == ["the document has 3 pages; the PNG and SVG show page 1 only (the PDF has every page)"]
    # kept in the cache
    assert renderer.render(tikz, "\\documentclass{article}\\begin{document}one\\newpage two\\newpage three\\end{document}",
                           standalone=True).warnings == result.warnings


def test_blocked_reads_are_named_as_such_not_as_missing_packages(renderer, tikz, monkeypatch):
    if problem := sandbox_problem():
        pytest.skip(f"bubblewrap cannot run here: {problem}")
    monkeypatch.setattr("tutor.diagrams.unsafe_tex", lambda code: None)  # what the sandbox and kpathsea say, unfiltered
    result = renderer.render(tikz, body("\\input{/etc/passwd}"))
    assert result.error.message == ("refused: /etc/passwd.tex is outside the diagram's job directory: "
                                    "diagram code may read only TeX's own files")
    image = renderer.render(tikz, body("\\pdfximage{/etc/passwd}\\pdfrefximage\\pdflastximage"))
    assert image.error.message.startswith("pdfTeX error") and "without a TeX error" not in image.error.message


def test_huge_input_is_refused_before_tex_starts(renderer, tikz, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("TeX was started"))
    result = renderer.render(tikz, body("%" * 5_000_000))
    assert not result.ok and result.error.message.startswith("refused: the code is 5000")


def test_a_body_that_injects_documentclass_is_refused(renderer, tikz, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("TeX was started"))
    result = renderer.render(tikz, "\\documentclass{article}\\begin{document}" + PICTURE)
    assert result.error.message == "refused: a body must not contain \\documentclass or \\begin{document}"


def test_a_missing_package_in_a_document_is_a_clear_error(renderer, tikz):
    result = renderer.render(tikz, "\\documentclass{standalone}\n\\usepackage{nosuchpackage-tutor}\n\\begin{document}x\\end{document}",
                             standalone=True)
    assert result.error.message == "LaTeX Error: File `nosuchpackage-tutor.sty' not found. (a missing package)"
    assert result.error.line == 2


# --- the CLI ------------------------------------------------------------------------------


def run(*args, **kwargs):
    return CliRunner().invoke(cli, list(args), **kwargs)


def test_cli_render_check_and_extract(toy, tmp_path):
    ws = ["--workspace", str(tmp_path / "ws"), "--subject", "toy"]
    source = tmp_path / "force.tex"
    source.write_text(PICTURE)
    result = run(*ws, "diagram", "render", str(source))
    assert result.exit_code == 0, result.output
    paths = result.output.split()
    assert [p.rsplit("/", 1)[1] for p in paths] == ["force.png", "force.svg", "force.pdf"]
    assert all((tmp_path / p).exists() or __import__("pathlib").Path(p).exists() for p in paths)
    result = run(*ws, "diagram", "render", "-", "--out", str(tmp_path / "out"), input="\\begin{tikzpicture}\\bad\\end{tikzpicture}")
    assert result.exit_code == 1 and result.output.startswith("error: -: line 1: Undefined control sequence.")

    result = run(*ws, "diagram", "check", "--out", str(tmp_path / "pngs"))
    assert result.exit_code == 0, result.output
    assert result.output.splitlines()[2].split() == ["tikz", "1", "1", "100%"]
    from tutor.bank import load_bank

    (drawn,) = load_bank(toy, toy.subject.bank).diagrams
    assert [p.name for p in (tmp_path / "pngs").glob("*.png")] == [
        f"{drawn.question_id}-flow-chart-answer-compare-with-marking-points-marks.png"]

    bad = tmp_path / "diagrams.jsonl"
    bad.write_text(json.dumps({"description": "broken", "format": "tikz", "author": "t",
                               "code": "\\begin{tikzpicture}\\bad\\end{tikzpicture}"}) + "\n")
    result = run(*ws, "diagram", "check", str(bad))
    assert result.exit_code == 1
    assert f"{bad}:1: broken: line 1: Undefined control sequence." in result.output
    assert "error: 1 of 1 diagrams did not compile" in result.output


def test_cli_extract_deduplicates_and_keeps_question_ids(toy_bank, tmp_path):
    answers = toy_bank / "answers.jsonl"
    lines = answers.read_text().splitlines()
    record = json.loads(lines[1])
    record.pop("id")
    record["text"] += "\nAgain: (DIAGRAM: Flow chart:   answer -> compare with marking points -> marks awarded, capped at the maximum.)"
    lines[1] = json.dumps(record)
    answers.write_text("\n".join(lines) + "\n")
    out = tmp_path / "requests.jsonl"
    result = run("--subject", "toy", "diagram", "extract", str(answers), "-o", str(out))
    assert result.exit_code == 0, result.output
    assert result.output.startswith("2 markers in 2 answers -> 1 requests (1 duplicates) -> ")
    (request,) = [json.loads(line) for line in out.read_text().splitlines()]
    assert request["format"] == "tikz" and request["question_ids"] == [record["question_id"]]


def test_pictures_are_named_by_question_and_description_never_twice_alike():
    from tutor.diagrams import picture_names
    from tutor.models import Diagram

    def drawn(description, question_id=None, fmt="tikz"):
        return Diagram(description=description, format=fmt, code="x", author="t", question_id=question_id)

    assert picture_names([
        drawn("Velocity-time graph: v against t, a straight line.", "q1"),
        drawn("Velocity–time graph: v against t; a straight line!", "q1"),  # the same slug: numbered, not overwritten
        drawn("A free-body diagram of a box on a slope, with weight, normal reaction and friction drawn.", "q2"),
        drawn("Circuit with a cell (1.5 V)", None, "circuitikz"),
        drawn("…", "q3"),
    ]) == [
        "q1-velocity-time-graph-v-against-t-a-straight",
        "q1-velocity-time-graph-v-against-t-a-straight-2",
        "q2-a-free-body-diagram-of-a-box-on",
        "circuitikz-circuit-with-a-cell-1-5-v",
        "q3-diagram",
    ]


def test_two_renderers_building_one_format_at_once_both_succeed(tmp_path, tikz, monkeypatch):
    """`tutor run --all` compiles several subjects' diagrams in threads, each with its own Renderer on the shared cache.
    Both used to stage the format in the same `.tmp` file: the second rename found it gone (FileNotFoundError)."""
    import threading

    both_copying = threading.Barrier(2, timeout=30)
    copy = shutil.copyfileobj

    def copy_together(source, sink, *args):  # hold each build at the copy until the other is there too
        both_copying.wait()
        return copy(source, sink, *args)

    monkeypatch.setattr(tutor_diagrams.shutil, "copyfileobj", copy_together)
    results, errors = [], []

    def render(code):
        try:
            results.append(Renderer(tmp_path / "shared", Limits(timeout_s=30, cpu_s=30)).render(tikz, code))
        except Exception as err:  # noqa: BLE001 - the test reports it
            errors.append(err)

    threads = [threading.Thread(target=render, args=(PICTURE.replace("$F$", f"$F_{i}$"),)) for i in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and [r.ok for r in results] == [True, True]
    assert [p.name for p in (tmp_path / "shared" / "formats").iterdir() if p.suffix == ".tmp"] == []
