"""Small offline data sets used by the chapters (all shipped by installed packages; nothing is downloaded)."""
from __future__ import annotations

__all__ = ["english_words"]


def english_words(count: int, *, min_length: int = 3, pool: int = 4000) -> list[str]:
    """The ``count`` most frequent English words of wordfreq's list that are alphabetic and at least
    ``min_length`` letters long, taken from the top ``pool`` entries (in frequency order)."""
    if not isinstance(count, int) or count < 1:
        raise ValueError(f"count must be a positive integer, got {count!r}")
    if not isinstance(min_length, int) or min_length < 1:
        raise ValueError(f"min_length must be a positive integer, got {min_length!r}")
    if not isinstance(pool, int) or pool < count:
        raise ValueError(f"pool must be an integer >= count, got {pool!r}")
    from wordfreq import top_n_list

    words = [w for w in top_n_list("en", pool) if w.isalpha() and len(w) >= min_length]
    if len(words) < count:
        raise ValueError(f"only {len(words)} words of the top {pool} qualify; raise pool")
    return words[:count]
