"""The renderer, against real pdflatex: behaviour, the sandbox, and the cache."""

import json
import subprocess
import uuid
import zlib

import pytest
from click.testing import CliRunner

from tutor.cli import cli
from tutor.diagrams import Limits, Renderer, require_format
from tutor.errors import TutorError
from tutor.registry import registry

PICTURE = "\\begin{tikzpicture}\n  \\draw[->] (0,0) -- (2,1) node[right] {$F$};\n\\end{tikzpicture}"


@pytest.fixture
def tikz():
    return registry().formats["tikz"]


@pytest.fixture
def renderer(tmp_path):
    return Renderer(tmp_path / "cache", Limits(timeout_s=15, cpu_s=15))


def pdf_text(path):
    return subprocess.run(["pdftotext", str(path), "-"], capture_output=True, text=True, check=True).stdout


@pytest.fixture
def pdflatex_runs(monkeypatch):
    """The pdflatex commands run from here on (format builds left out)."""
    runs = []
    real = subprocess.Popen

    def spy(command, **kwargs):
        if command[0] == "pdflatex" and "-ini" not in command:
            runs.append(command)
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
    assert (result.error.line, result.error.message, result.error.code_line) == (3, "Undefined control sequence.", "  \\drwa (0,0) circle (1);")
    assert str(result.error) == "line 3: Undefined control sequence.\n    \\drwa (0,0) circle (1);"
    assert result.error.for_repair().startswith("The code did not compile at line 3 of your code:\n    \\drwa (0,0) circle (1);\npdflatex said: Undefined")
    assert renderer.render(tikz, "\\begin{tikzpicture}\n  \\draw (0,0) -- (1,1);\n  \\drwa (0,0) circle (1);\n\\end{tikzpicture}").cached  # errors are cached too


def test_a_standalone_document_goes_through_the_same_sandbox(renderer, tikz):
    document = "\\documentclass{standalone}\n\\usepackage{tikz}\n\\begin{document}\n\\tikz \\draw (0,0) circle (1);\n\\oops\n\\end{document}\n"
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
        if command[0] == "pdflatex":
            commands.append(command)
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


@pytest.fixture
def secret(tmp_path_factory):
    """A file outside any job directory whose content must never come back."""
    path = tmp_path_factory.mktemp("outside") / "secret.tex"
    path.write_text(f"SECRET{uuid.uuid4().hex}")
    return path


def leaked(result, text):
    parts = [str(result.error)] if result.error else []
    if result.ok:
        parts += [pdf_text(result.pdf), result.svg.read_text(errors="replace"), result.png.read_bytes().decode("latin-1")]
    return any(text in part for part in parts)


def body(inject):
    return f"\\begin{{tikzpicture}}\\node {{x}};\\end{{tikzpicture}}\n{inject}"


def test_write18_creates_nothing(renderer, tikz, tmp_path):
    marker = tmp_path / "pwned"
    for code, standalone in [(body(f"\\immediate\\write18{{touch {marker}}}"), False),
                             (f"\\documentclass{{article}}\\begin{{document}}\\immediate\\write18{{touch {marker}}}x\\end{{document}}", True)]:
        renderer.render(tikz, code, standalone)
    assert not marker.exists()


@pytest.mark.parametrize("how", ["absolute", "relative"])
def test_input_of_outside_files_reads_nothing(renderer, tikz, secret, how):
    target = str(secret) if how == "absolute" else "../" * 12 + str(secret).lstrip("/")
    secret_text = secret.read_text()
    for code in [body(f"\\input{{{target}}}"), body("\\input{/etc/passwd}"), body("\\input{/etc/hostname}")]:
        result = renderer.render(tikz, code)
        assert not leaked(result, secret_text) and not leaked(result, "root:x:0:0")


def test_openout_writes_nothing_outside_the_job_directory(renderer, tikz, tmp_path):
    outside = tmp_path / f"evil-{uuid.uuid4().hex}.txt"
    for target in [str(outside), "../" * 12 + str(outside).lstrip("/")]:
        renderer.render(tikz, body(f"\\immediate\\openout5={target}\\immediate\\write5{{x}}\\immediate\\closeout5"))
    assert not outside.exists()


def test_piped_input_and_directlua_run_nothing(renderer, tikz, tmp_path):
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
    assert not [c for c, _ in seen if "lua" in c[0]]
    tex = [(c, env) for c, env in seen if c[0] != "pdftoppm" and c[0] != "pdftocairo"]
    assert tex
    for command, env in tex:
        assert command[0] == "pdflatex" and "-no-shell-escape" in command and "-halt-on-error" in command
        assert (env["shell_escape"], env["openin_any"], env["openout_any"]) == ("f", "p", "p")


def test_infinite_loops_and_page_floods_are_stopped_and_the_next_render_works(tmp_path, tikz):
    renderer = Renderer(tmp_path / "cache", Limits(timeout_s=4, cpu_s=4, max_pages=8))
    loop = renderer.render(tikz, body("\\def\\a{\\a}\\a"))
    assert not loop.ok and loop.error.message.startswith("stopped:")
    flood = "\\documentclass{article}\\begin{document}\\newcount\\n\\loop\\null\\newpage\\advance\\n 1 \\ifnum\\n<100000 \\repeat\\end{document}"
    result = renderer.render(tikz, flood, standalone=True)
    assert not result.ok and result.error.message.startswith(("stopped:", "refused:"))
    assert renderer.render(tikz, PICTURE).ok


def test_huge_input_is_refused_before_tex_starts(renderer, tikz, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("TeX was started"))
    result = renderer.render(tikz, body("%" * 5_000_000))
    assert not result.ok and result.error.message.startswith("refused: the code is 5000")


def test_a_body_that_injects_documentclass_is_refused(renderer, tikz, monkeypatch):
    monkeypatch.setattr("tutor.diagrams.subprocess.Popen", lambda *a, **k: pytest.fail("TeX was started"))
    result = renderer.render(tikz, "\\documentclass{article}\\begin{document}" + PICTURE)
    assert result.error.message == "refused: a body must not contain \\documentclass or \\begin{document}"


def test_a_missing_package_in_a_document_is_a_clear_error(renderer, tikz):
    result = renderer.render(tikz, "\\documentclass{standalone}\n\\usepackage{nosuchpackage-tutor}\n\\begin{document}x\\end{document}", standalone=True)
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
    assert len(list((tmp_path / "pngs").glob("*.png"))) == 1

    bad = tmp_path / "diagrams.jsonl"
    bad.write_text(json.dumps({"description": "broken", "format": "tikz", "author": "t", "code": "\\begin{tikzpicture}\\bad\\end{tikzpicture}"}) + "\n")
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
