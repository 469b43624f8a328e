"""Figure style of the book: white background (readable in the site's dark mode), labelled axes, ASCII text."""
from __future__ import annotations

__all__ = ["BOOK_STYLE", "use_book_style"]

BOOK_STYLE = {
    "figure.facecolor": "white",
    "axes.facecolor": "white",
    "savefig.facecolor": "white",
    "figure.edgecolor": "white",
    "axes.edgecolor": "#333333",
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.framealpha": 0.9,
    "figure.dpi": 100,
    "figure.figsize": (7.0, 4.0),
    "axes.spines.top": False,
    "axes.spines.right": False,
}


def use_book_style() -> None:
    """Apply :data:`BOOK_STYLE` to matplotlib's global settings."""
    import matplotlib as mpl

    mpl.rcParams.update(BOOK_STYLE)
