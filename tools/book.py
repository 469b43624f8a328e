"""Build, test and report the book.  Usage (from anywhere):

    python tools/book.py build     # install, run all tests (executes every chapter once), render _build/html
    python tools/book.py test      # install, run all tests: utils unit tests + every chapter, then write the reports
    python tools/book.py install   # only install the requirements (torch pinned first when absent)
    python tools/book.py render    # only render the site from the chapters executed by the last test run

The chapters are executed on a copy of book/ in the hidden folder .exec/ (pytest --nbmake --overwrite), so the
tracked notebooks stay output-free and `git status` stays clean. The reports book/status.md and book/claims.md
(git-ignored) are generated from that run and rendered into the site.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
STAGE = ROOT / ".exec"            # executed copy of the book (hidden: never collected or rendered by accident)
LEDGER = STAGE / "claims"         # JSON lines written by utils.claims during the run
JUNIT = STAGE / "junit.xml"
CONSTRAINTS = ROOT / ".ci" / "constraints.txt"
MAX_CHAPTER_SECONDS = 90.0        # BOOK.md: the run fails if one chapter takes longer
TARGET_CHAPTER_SECONDS = 40.0     # the chapter budget on the CI machine (reported, not enforced)


def run(cmd: list[str], *, env: dict | None = None, timeout: float | None = None) -> int:
    print("+ " + " ".join(cmd), flush=True)
    try:
        return subprocess.run(cmd, cwd=ROOT, env=env, timeout=timeout).returncode
    except subprocess.TimeoutExpired:
        print(f"timed out after {timeout:.0f} s: {' '.join(cmd)}", flush=True)
        return 124


# ---------------------------------------------------------------------------------------------------------- install
def installed_version(dist: str) -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version(dist)
    except PackageNotFoundError:
        return None


def install() -> int:
    """Install requirements.txt. torch is installed first with the pinned version when absent (an open range would
    pull several GB of CUDA packages onto a CPU machine); an already installed torch (Colab, a GPU box) is kept."""
    pins = {}
    for line in CONSTRAINTS.read_text().splitlines():
        line = line.split("#")[0].strip()
        if line:
            name, _, ver = line.partition("==")
            pins[name.strip().lower()] = ver.strip()
    pip = [sys.executable, "-m", "pip", "install", "--quiet"]
    if installed_version("torch") is None:
        code = run(pip + [f"torch=={pins['torch']}"], timeout=1800)
        if code:
            return code
    keep = {name: ver for name, ver in pins.items()
            if name != "torch" or installed_version("torch").split("+")[0] == ver}
    with tempfile.NamedTemporaryFile("w", suffix=".txt", delete=False) as fh:
        fh.write("\n".join(f"{name}=={ver}" for name, ver in keep.items()) + "\n")
    try:
        return run(pip + ["-r", str(ROOT / "requirements.txt"), "-c", fh.name], timeout=1800)
    finally:
        os.unlink(fh.name)


# ------------------------------------------------------------------------------------------------------------- test
def stage() -> None:
    """Fresh executable copy of the book: .exec/{book/, _config.yml, _toc.yml}."""
    if STAGE.exists():
        shutil.rmtree(STAGE)
    shutil.copytree(ROOT / "book", STAGE / "book", ignore=shutil.ignore_patterns(".ipynb_checkpoints", "status.md",
                                                                                   "claims.md"))
    for name in ("_config.yml", "_toc.yml"):
        shutil.copy2(ROOT / name, STAGE / name)


def test(extra: list[str]) -> int:
    stage()
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}  # Agg would drop every figure
    env.update(OMP_NUM_THREADS="1", MKL_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", BOOK_LEDGER=str(LEDGER),
               PYTHONPATH=str(ROOT), HF_HUB_OFFLINE="1", TRANSFORMERS_OFFLINE="1", PYDEVD_DISABLE_FILE_VALIDATION="1")
    workers = ["-n", env.get("BOOK_WORKERS", "2")] if env.get("BOOK_WORKERS", "2") != "0" else []
    code = run([sys.executable, "-m", "pytest", "tests", str(STAGE.relative_to(ROOT) / "book"), "--nbmake",
                "--overwrite", "--nbmake-timeout=600", *workers, "-p", "no:cacheprovider", "-p", "no:benchmark",
                "-p", "tools.pytest_short_poll",
                f"--junitxml={JUNIT}", "-o", "junit_family=xunit2", "-rfE", *extra], env=env, timeout=3600)
    report_code = report()
    return code or report_code


# ---------------------------------------------------------------------------------------------------------- reports
def toc_chapters() -> list[str]:
    """Notebook entries of _toc.yml in reading order, e.g. 'book/geometry/jl-lemma-theory'."""
    entries = re.findall(r"^\s*-?\s*file:\s*(\S+)", (ROOT / "_toc.yml").read_text(), flags=re.M)
    return [e for e in entries if (ROOT / f"{e}.ipynb").exists()]


def junit_times() -> dict[str, tuple[float, str]]:
    """{'book/geometry/x': (seconds, 'passed'|'failed'|'skipped')} for the executed notebooks."""
    out: dict[str, tuple[float, str]] = {}
    if not JUNIT.exists():
        return out
    for case in ET.parse(JUNIT).getroot().iter("testcase"):
        # nbmake items look like classname=".exec.book.geometry.<slug>.ipynb" (slugs contain no dots)
        match = re.search(r"(?:^|\.)(book(?:\.[^.]+)+)\.ipynb$", case.get("classname", ""))
        if not match:
            continue
        status = "failed" if case.find("failure") is not None or case.find("error") is not None else (
            "skipped" if case.find("skipped") is not None else "passed")
        out[match.group(1).replace(".", "/")] = (float(case.get("time", "nan")), status)
    return out


def read_ledger(slug: str) -> list[dict]:
    path = LEDGER / f"{slug}.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]


def claim_texts(notebook: Path) -> dict[str, tuple[str, str]]:
    """{claim_id: (short name, statement)} from the chapter's '## <id> · name' headings and '**Claim.**' paragraphs."""
    cells = json.loads(notebook.read_text(encoding="utf-8"))["cells"]
    texts: dict[str, tuple[str, str]] = {}
    current = None
    for cell in cells:
        if cell["cell_type"] != "markdown":
            continue
        text = "".join(cell["source"])
        for line in text.splitlines():
            head = re.match(r"^#{2,3}\s+([a-z0-9-]+/C\d+)\s*[·:-]?\s*(.*)$", line)
            if head:
                current = head.group(1)
                texts[current] = (head.group(2).strip(), "")
        if current and not texts[current][1]:
            para = re.search(r"\*\*Claim\.?\*\*\s*(.+?)(?:\n\s*\n|$)", text, flags=re.S)
            if para:
                texts[current] = (texts[current][0], " ".join(para.group(1).split()))
    return texts


def relink(text: str, entry: str) -> str:
    """Make a chapter's relative {doc} links (``{doc}`slug` ``, ``{doc}`label <../part/slug>` ``) valid from book/."""
    import posixpath

    folder = entry.split("/")[1]

    def fix(match: re.Match) -> str:
        label, target = (match.group(1), match.group(2)) if match.group(2) else (None, match.group(1))
        if target.startswith("/"):
            return match.group(0)
        resolved = posixpath.normpath(f"{folder}/{target.strip()}")
        return f"{{doc}}`{(label or target).strip()} <{resolved}>`"

    return re.sub(r"\{doc\}`([^`<>]*?)(?:\s*<([^`<>]+)>)?`", fix, text)


def chapter_title(notebook: Path) -> str:
    """The '# ' title of the chapter's first cell."""
    first = "".join(json.loads(notebook.read_text(encoding="utf-8"))["cells"][0]["source"])
    return first.splitlines()[0].lstrip("# ").strip()


def fmt(value) -> str:
    """Compact display of a ledger value: 4 significant digits, long lists elided."""
    if value is None:
        return ""
    if isinstance(value, float):
        return f"{value:.4g}"
    if isinstance(value, list):
        while any(isinstance(v, list) for v in value):  # arrays of any rank are shown flattened
            value = [w for v in value for w in (v if isinstance(v, list) else [v])]
        flat = value if len(value) <= 4 else value[:2] + ["…"] + value[-1:]
        return "[" + ", ".join(fmt(v) if not isinstance(v, str) else v for v in flat) + "]"
    return str(value)


def describe_check(rec: dict) -> str:
    """One check as 'measured OP expected (tol t) — note'."""
    symbol = {"close": "≈", "le": "≤", "lt": "<", "ge": "≥", "gt": ">"}.get(rec.get("op"), "≈")
    if rec["expected"] is None:
        text = "true" if rec["measured"] is True else "false"
    else:
        text = f"{fmt(rec['measured'])} {symbol} {fmt(rec['expected'])}"
        if rec["tol"] is not None:
            text += f" (tol {fmt(rec['tol'])}{' rel.' if rec.get('rel') else ''})"
    note = rec.get("note") or ""
    if len(note) > 110:
        note = note[:107] + "…"
    note = re.sub(r"([*_`\\$])", r"\\\1", note)  # notes are plain text: no emphasis or math by accident
    return f"`{text}`" + (f" — {note}" if note else "")


def versions() -> dict[str, str]:
    names = ["torch", "numpy", "scipy", "scikit-learn", "matplotlib", "sympy", "jupyter-book", "nbmake"]
    out = {"python": platform.python_version()}
    out.update({n: installed_version(n) or "—" for n in names})
    return out


def report() -> int:
    """Write book/status.md and book/claims.md (and their copies in the stage) from the last test run."""
    chapters = toc_chapters()
    times = junit_times()
    vers = versions()
    problems = []
    status_rows, claim_rows = [], []
    totals = {"pass": 0, "fail": 0, "not reproducible": 0}
    for entry in chapters:
        slug = entry.rsplit("/", 1)[-1]
        seconds, outcome = times.get(entry, (float("nan"), "not run"))
        ledger = read_ledger(slug) if outcome != "not run" else []
        verdicts = [r["verdict"] for r in ledger]
        seen: dict[str, list[dict]] = {}  # the chapter's ledger records, grouped by claim
        for rec in ledger:
            seen.setdefault(rec["claim"], []).append(rec)
        kinds_of = {claim: {r["verdict"] for r in recs} for claim, recs in seen.items()}
        claims_ok = sum("fail" not in v and "pass" in v for v in kinds_of.values())
        claims_bad = sum("fail" in v for v in kinds_of.values())
        claims_nr = sum(v == {"not reproducible"} for v in kinds_of.values())
        devices = sorted({r.get("device") or "—" for r in ledger}) or ["—"]
        if seconds == seconds and seconds > MAX_CHAPTER_SECONDS:
            problems.append(f"{slug} took {seconds:.1f} s > {MAX_CHAPTER_SECONDS:.0f} s")
        flag = " ⚠" if seconds == seconds and seconds > TARGET_CHAPTER_SECONDS else ""
        status_rows.append(f"| [{slug}]({slug_link(entry)}) | {seconds:.1f}{flag} | {outcome} | "
                           f"{claims_ok} | {claims_bad} | {claims_nr} | {verdicts.count('pass')} / "
                           f"{len(verdicts) - verdicts.count('not reproducible')} | {', '.join(devices)} |")
        texts = claim_texts(ROOT / f"{entry}.ipynb")
        rows_of_chapter: list[str] = []
        for claim in sorted(set(seen) | set(texts), key=lambda c: int(c.rsplit("C", 1)[1])):
            name, statement = texts.get(claim, ("", ""))
            recs, kinds = seen.get(claim, []), kinds_of.get(claim, set())
            verdict = ("fail" if "fail" in kinds else "pass" if kinds == {"pass"} else
                       "not reproducible" if kinds == {"not reproducible"} else
                       "pass + not reproducible" if kinds else "not run")
            for kind in ("pass", "fail", "not reproducible"):
                totals[kind] += sum(r["verdict"] == kind for r in recs)
            checks = [describe_check(r) for r in recs if r["verdict"] != "not reproducible"]
            notes = [r["note"] for r in recs if r["verdict"] == "not reproducible" and r.get("note")]
            mark = {"pass": "✅", "fail": "❌", "not reproducible": "⚪", "pass + not reproducible": "✅⚪"}.get(verdict,
                                                                                                        "❔")
            rows_of_chapter += [f"**{mark} [{claim}]({slug_link(entry)}) · {name}** — *{verdict}*", ""]
            if statement:
                rows_of_chapter += [relink(statement, entry), ""]
            rows_of_chapter += [f"- {c}" for c in checks]
            rows_of_chapter += [f"- *Not reproducible:* {n}" for n in notes[:1]]
            rows_of_chapter.append("")
        title = chapter_title(ROOT / f"{entry}.ipynb")
        claim_rows += [f"## {title}", "", f"Chapter: [{slug}]({slug_link(entry)}).", "", *rows_of_chapter]
    when = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    cpu = f"{os.cpu_count()} CPU cores"
    status = [
        "# Execution status", "",
        f"Generated by `python tools/book.py test` on {when} ({platform.platform()}, {cpu}). Each chapter ran once "
        f"under `pytest --nbmake` (2 workers, one thread per kernel); its time includes kernel start-up. The chapter "
        f"budget is {TARGET_CHAPTER_SECONDS:.0f} s on the CI machine (⚠ marks chapters above it) and the run fails "
        f"above {MAX_CHAPTER_SECONDS:.0f} s.", "",
        "| chapter | seconds | result | claims verified | claims failed | claims not reproducible | checks passed "
        "| device |",
        "|---|---:|---|---:|---:|---:|---:|---|", *status_rows, "",
        "A claim is *verified* when every check of it passed; a chapter usually runs several checks per claim.", "",
        "## Versions", "", "| package | version |", "|---|---|",
        *[f"| {k} | {v} |" for k, v in vers.items()], "",
        f"Seed: `BOOK_SEED={os.environ.get('BOOK_SEED', '0')}`, scale: `BOOK_SCALE={os.environ.get('BOOK_SCALE', 'small')}`.",
    ]
    claims = [
        "# Claims ledger", "",
        "Every claim of every chapter, as verified by the last test run: its verdict, its statement (from the chapter) "
        "and, for each check of it, `measured OP expected (tolerance)` followed by what the check compares (4 "
        "significant digits; long arrays elided, the chapter prints them in full). ✅ pass, ❌ fail. *Not reproducible* marks claims that need a pretrained model or data we do not have; "
        "the chapter then shows a labelled substitute (⚪).", "",
        f"Totals over all checks: {totals['pass']} passed, {totals['fail']} failed, "
        f"{totals['not reproducible']} recorded as not reproducible.", "",
        *claim_rows,
    ]
    for folder in (ROOT / "book", STAGE / "book"):
        if folder.exists():
            (folder / "status.md").write_text("\n".join(status) + "\n", encoding="utf-8")
            (folder / "claims.md").write_text("\n".join(claims) + "\n", encoding="utf-8")
    for line in problems:
        print(f"REPORT: {line}", flush=True)
    print(f"reports: book/status.md, book/claims.md ({len(chapters)} chapters)", flush=True)
    return 1 if problems else 0


def slug_link(entry: str) -> str:
    """Link from book/status.md (in book/) to a chapter page."""
    return entry.removeprefix("book/") + ".ipynb"


# ----------------------------------------------------------------------------------------------------------- render
WIDGET_PACKAGES = {"requirejs": "2.3.4", "@jupyter-widgets/html-manager": "1.0.6"}  # myst-nb's defaults
VENDOR_CACHE = ROOT / "_build" / ".vendor"


def vendor_widget_scripts() -> bool:
    """Serve the two scripts that render saved widget state (require.js and html-manager's embed-amd.js) from the
    site itself instead of CDNs, so sliders and their saved outputs work offline.

    The npm packages are fetched with `npm pack` (cached in _build/.vendor) and copied into the stage as a static
    folder that is NOT called _static (jupyter-book would inject every .js found there into every page); the stage's
    _config.yml then points myst-nb at them. Without npm the site keeps myst-nb's CDN defaults."""
    import tarfile

    import yaml

    files = {"requirejs": VENDOR_CACHE / "requirejs" / "require.js",
             "@jupyter-widgets/html-manager": VENDOR_CACHE / "html-manager" / "dist" / "embed-amd.js"}
    if not all(f.exists() for f in files.values()):
        npm = shutil.which("npm")
        if npm is None:
            print("note: npm not found; widget scripts will load from their CDNs", flush=True)
            return False
        VENDOR_CACHE.mkdir(parents=True, exist_ok=True)
        for name, ver in WIDGET_PACKAGES.items():
            try:
                result = subprocess.run([npm, "pack", f"{name}@{ver}", "--silent"], cwd=VENDOR_CACHE, timeout=300,
                                        capture_output=True, text=True)
            except subprocess.TimeoutExpired:
                result = None
            if result is None or result.returncode:
                print(f"note: npm pack {name}@{ver} failed; widget scripts will load from their CDNs", flush=True)
                return False
            target = files[name].parents[0 if name == "requirejs" else 1]
            with tarfile.open(VENDOR_CACHE / result.stdout.strip().splitlines()[-1]) as tar:
                tar.extractall(VENDOR_CACHE / "tmp", filter="data")
            shutil.rmtree(target, ignore_errors=True)
            shutil.move(VENDOR_CACHE / "tmp" / "package", target)
    vendor = STAGE / "_vendor" / "widgets"
    shutil.rmtree(vendor, ignore_errors=True)
    vendor.mkdir(parents=True)
    shutil.copy2(files["requirejs"], vendor / "require.js")
    shutil.copytree(files["@jupyter-widgets/html-manager"].parent, vendor / "html-manager",
                    ignore=shutil.ignore_patterns("*.map", "embed.js", "libembed-amd.js", "*.LICENSE.txt"))
    config = yaml.safe_load((STAGE / "_config.yml").read_text())
    sphinx_config = config.setdefault("sphinx", {}).setdefault("config", {})
    sphinx_config["html_static_path"] = ["_vendor"]
    sphinx_config["nb_ipywidgets_js"] = {
        "widgets/require.js": {},
        "widgets/html-manager/embed-amd.js": {"data-jupyter-widgets-cdn": "https://cdn.jsdelivr.net/npm/"},
    }
    (STAGE / "_config.yml").write_text(yaml.safe_dump(config, sort_keys=False))
    return True


def render() -> int:
    if not (STAGE / "book").exists():
        print("nothing to render: run `python tools/book.py test` first", flush=True)
        return 1
    if not (STAGE / "book" / "status.md").exists():
        report()
    out = ROOT / "_build"
    for stale in ("html", "jupyter_execute", ".doctrees"):  # pages of removed chapters must not linger
        shutil.rmtree(out / stale, ignore_errors=True)
    vendor_widget_scripts()
    jb = Path(sys.executable).parent / "jupyter-book"
    code = run([str(jb) if jb.exists() else "jupyter-book", "build", str(STAGE), "--path-output", str(ROOT),
                "--builder", "html", "-W", "--keep-going"], timeout=1200)
    if code == 0:
        print(f"\nThe book is ready: open {out / 'html' / 'index.html'}", flush=True)
    return code


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Build, test and report the kexue.fm companion book.")
    parser.add_argument("command", choices=["build", "test", "install", "render", "report"])
    parser.add_argument("--no-install", action="store_true", help="skip the pip install step")
    parser.add_argument("pytest_args", nargs="*", help="extra arguments for pytest (after --)")
    args = parser.parse_args(argv)
    if args.command == "report":
        return report()
    if args.command == "render":
        return render()
    if not args.no_install or args.command == "install":
        code = install()
        if code or args.command == "install":
            return code
    code = test(args.pytest_args)
    if args.command == "build":
        render_code = render()
        code = code or render_code
    return code


if __name__ == "__main__":
    sys.exit(main())
