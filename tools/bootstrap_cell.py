"""The bootstrap cell every chapter starts with (tagged ``remove-cell``); tests check each notebook uses it verbatim.

It puts this repository's root first on ``sys.path`` so that ``import utils`` loads the book's own ``utils/`` and
never the unrelated PyPI package of that name. It works from the notebook's folder, from an executed copy under a
hidden folder, under nbmake, under jupyter-book, and on Colab after ``git clone`` (it also looks one folder down
from the working directory, and honours ``BOOK_ROOT``). It installs nothing.
"""

BOOTSTRAP_SOURCE = '''\
# Bootstrap (hidden on the website): make `import utils` load this repository's utils/ package.
import os, sys
from pathlib import Path

def _book_root():
    here = Path(os.environ.get("BOOK_ROOT", Path.cwd())).resolve()
    candidates = [here, *here.parents, *sorted(p for p in here.glob("*") if p.is_dir())]  # glob: Colab's /content
    for path in candidates:
        if (path / "utils" / "__init__.py").is_file() and (path / "_toc.yml").is_file():
            return path
    raise RuntimeError("Run this notebook inside a clone of the book (on Colab: clone it, then %cd into it).")

_root = _book_root()
sys.path.insert(0, str(_root))
for _name in [m for m in sys.modules if m == "utils" or m.startswith("utils.")]:
    del sys.modules[_name]  # an unrelated `utils` imported earlier must not shadow ours
import utils
assert Path(utils.__file__).resolve().is_relative_to(_root), f"wrong utils package: {utils.__file__}"
print(utils.setup_notebook())'''

BOOTSTRAP_TAGS = ["remove-cell"]
