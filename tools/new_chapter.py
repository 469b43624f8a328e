"""Create the skeleton of a new chapter: python tools/new_chapter.py <part> <slug> "<English title>".

Writes book/<part>/<slug>.ipynb with the title cell, the standard bootstrap cell (tagged remove-cell) and the
closing claims-summary cell. Then add the chapter to _toc.yml and fill in one section per claim of the spec.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from bootstrap_cell import BOOTSTRAP_SOURCE, BOOTSTRAP_TAGS  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def skeleton(slug: str, title: str) -> nbformat.NotebookNode:
    """A new notebook: title, bootstrap, summary."""
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    nb.cells = [
        nbformat.v4.new_markdown_cell(f"# {title}\n\n*Original:* 《…》, <date>, <https://kexue.fm/archives/…>\n\n"
                                      "Abstract in our own words.\n\n**Claims verified here:** …"),
        nbformat.v4.new_code_cell(BOOTSTRAP_SOURCE, metadata={"tags": list(BOOTSTRAP_TAGS)}),
        nbformat.v4.new_markdown_cell("## Claims summary"),
        nbformat.v4.new_code_cell(f'utils.summary("{slug}")'),
    ]
    return nb


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__)
        return 2
    part, slug, title = argv
    path = ROOT / "book" / part / f"{slug}.ipynb"
    if path.exists():
        print(f"{path} exists; not overwriting")
        return 1
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.write(skeleton(slug, title), path)
    print(f"wrote {path.relative_to(ROOT)}; now add it to _toc.yml")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
