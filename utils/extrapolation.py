"""Length extrapolation helpers: randomized / equal-mean position ids, order statistics of random position samples,
the Chomsky-hierarchy (CHE) task rules, and the copy-first-token experiment of
``length-extrapolation-position-robustness``.

Position samplers return torch tensors of shape ``(batch, N)`` on CPU (or on the generator's device); random draws come
only from the ``generator`` argument, so results are reproducible from a seed. The CHE tasks are pure Python: each
task has a rule ``solve(input) -> output`` and a generator ``generate(rng, length) -> (input, output)`` taking a numpy
``Generator``. Conventions: binary strings are most-significant bit first; in Stack Manipulation the END of the string
is the top of the stack and POP on an empty stack does nothing; arithmetic is over single digits 0-4 with the usual
precedence (``*`` before ``+``/``-``), unary minus, result taken mod 5 in ``{0..4}`` (the characters ``×`` and ``−``
are accepted as ``*`` and ``-``).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch

from ._validation import positive_int

__all__ = ["random_position_ids", "uniform_position_grid", "equal_mean_position_ids", "order_statistic_moments",
           "CheTask", "CHE_TASKS", "evaluate_mod5", "even_pairs", "modular_arithmetic_simple", "parity_check",
           "cycle_navigation", "modular_arithmetic", "reverse_string", "solve_equation", "stack_manipulation",
           "binary_addition", "binary_multiplication", "compute_sqrt", "duplicate_string", "missing_duplicate",
           "odds_first", "bucket_sort", "copy_first_token_batch", "training_positions", "train_copy_first_token",
           "copy_first_token_accuracy", "POSITION_SCHEMES"]


# ---------------------------------------------------------------------------------------------- position samplers
def random_position_ids(batch: int, N: int, L: int, generator: torch.Generator | None = None) -> torch.Tensor:
    """Randomized positions (Ruoss et al.): per row, ``N`` distinct ids drawn uniformly from ``{0..L-1}``, sorted.

    Vectorised as ``rand(batch, L).argsort(-1)[:, :N].sort(-1)`` (a uniformly random subset per row).

    Returns:
        int64 tensor ``(batch, N)``, strictly increasing along the last axis, on the generator's device.
    """
    batch = positive_int(batch, "batch")
    N = positive_int(N, "N")
    L = positive_int(L, "L")
    if N > L:
        raise ValueError(f"need N <= L to draw N distinct ids from range(L), got N={N}, L={L}")
    dev = generator.device if generator is not None else None
    u = torch.rand(batch, L, generator=generator, device=dev)
    return u.argsort(-1)[:, :N].sort(-1).values


def uniform_position_grid(M: int, L: int, endpoint: bool = False) -> torch.Tensor:
    """Evenly spread test positions in ``[0, L)``.

    ``endpoint=False``: ``floor(k L / M)`` for ``k = 0..M-1`` (``M=512, L=2048`` gives ``[0, 4, ..., 2044]``);
    ``endpoint=True``: ``round(linspace(0, L-1, M))`` (first 0, last ``L-1``). int64 tensor ``(M,)``.
    """
    M = positive_int(M, "M")
    L = positive_int(L, "L")
    if M > L:
        raise ValueError(f"need M <= L for distinct grid points, got M={M}, L={L}")
    if endpoint:
        return torch.round(torch.linspace(0, L - 1, M, dtype=torch.float64)).long()
    return torch.div(torch.arange(M, dtype=torch.int64) * L, M, rounding_mode="floor")


def equal_mean_position_ids(batch: int, N: int, dist: str = "exponential", mean: float | None = None,
                            M: float | None = None, alpha: float | None = None,
                            generator: torch.Generator | None = None) -> torch.Tensor:
    """Equal-mean random positions (Su): per row draw a length ``s`` with ``E[s] = mean`` and use the ``N`` evenly
    spaced real positions ``linspace(0, 1, N) * s``. The average position sequence is ``linspace(0, 1, N) * mean``.

    Args:
        batch, N: output shape ``(batch, N)`` (``N >= 2``).
        dist: ``"exponential"`` (``s = mean * E``, ``E ~ Exp(1)`` drawn as
            ``torch.empty(batch, 1).exponential_(1, generator=generator)``) or ``"beta"`` (``s = M * x``,
            ``x ~ Beta(alpha, beta)`` with ``beta = alpha (M / mean - 1)``, so ``E[s] = mean``; needs ``M > mean``
            and ``alpha > 0``; the Beta draws use numpy seeded from the torch generator).
        mean: the mean length (default ``N``).

    Returns:
        float64 tensor ``(batch, N)``, non-decreasing along the last axis, first column 0.
    """
    batch = positive_int(batch, "batch")
    N = positive_int(N, "N", minimum=2)
    mean = float(N) if mean is None else float(mean)
    if not mean > 0 or not math.isfinite(mean):
        raise ValueError(f"mean must be a positive finite number, got {mean}")
    if dist == "exponential":
        s = torch.empty(batch, 1, dtype=torch.float64).exponential_(1.0, generator=generator) * mean
    elif dist == "beta":
        if M is None or alpha is None or not float(M) > mean or not float(alpha) > 0:
            raise ValueError("dist='beta' needs M > mean and alpha > 0")
        beta = float(alpha) * (float(M) / mean - 1.0)
        seed = int(torch.randint(0, 2**62, (1,), generator=generator))
        x = np.random.default_rng(seed).beta(float(alpha), beta, size=(batch, 1))
        s = torch.from_numpy(x) * float(M)
    else:
        raise ValueError(f"dist must be 'exponential' or 'beta', got {dist!r}")
    return torch.linspace(0, 1, N, dtype=torch.float64) * s


def order_statistic_moments(N: int, L: int) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance of the k-th smallest of ``N`` draws without replacement from ``{0..L-1}``, ``k = 1..N``.

    ``E[X_(k)] = k (L+1)/(N+1) - 1`` and ``Var[X_(k)] = k (N-k+1) (L+1) (L-N) / ((N+1)^2 (N+2))`` (the order
    statistics of a simple random sample of ``{1..L}``, shifted by one). float64 arrays of shape ``(N,)``.
    """
    N = positive_int(N, "N")
    L = positive_int(L, "L")
    if N > L:
        raise ValueError(f"need N <= L, got N={N}, L={L}")
    k = np.arange(1, N + 1, dtype=np.float64)
    mean = k * (L + 1) / (N + 1) - 1
    var = k * (N - k + 1) * (L + 1) * (L - N) / ((N + 1) ** 2 * (N + 2))
    return mean, var


# ---------------------------------------------------------------------------------------------- CHE task rules
def _check_str(s: Any, alphabet: str, name: str = "input") -> str:
    if not isinstance(s, str) or any(ch not in alphabet for ch in s):
        raise ValueError(f"{name} must be a string over {alphabet!r}, got {s!r}")
    return s


def evaluate_mod5(expr: str, z: int | None = None) -> int:
    """Evaluate an arithmetic expression over digits 0-4 with ``+ - *``, brackets and unary minus; return the exact
    value mod 5 in ``{0..4}``. The letter ``z`` stands for the value ``z``."""
    text = expr.replace("×", "*").replace("−", "-").replace(" ", "")
    allowed = "01234+-*()" + ("z" if z is not None else "")
    _check_str(text, allowed, "expression")
    pos = 0

    def peek() -> str:
        return text[pos] if pos < len(text) else ""

    def eat(ch: str) -> None:
        nonlocal pos
        if peek() != ch:
            raise ValueError(f"malformed expression {expr!r} at position {pos}")
        pos += 1

    def parse_expr() -> int:
        value = parse_term()
        while peek() in ("+", "-") and peek():
            op = peek()
            eat(op)
            rhs = parse_term()
            value = value + rhs if op == "+" else value - rhs
        return value

    def parse_term() -> int:
        value = parse_unary()
        while peek() == "*":
            eat("*")
            value *= parse_unary()
        return value

    def parse_unary() -> int:
        if peek() == "-":
            eat("-")
            return -parse_unary()
        if peek() == "(":
            eat("(")
            value = parse_expr()
            eat(")")
            return value
        ch = peek()
        if ch == "z":
            eat("z")
            return int(z)
        if ch and ch in "01234":
            eat(ch)
            return int(ch)
        raise ValueError(f"malformed expression {expr!r} at position {pos}")

    value = parse_expr()
    if pos != len(text):
        raise ValueError(f"malformed expression {expr!r}: trailing {text[pos:]!r}")
    return value % 5


def even_pairs(s: str) -> bool:
    """R: is the number of 'ab' plus 'ba' 2-grams even? (equivalently: first char == last char)."""
    s = _check_str(s, "ab")
    return sum(s[i] != s[i + 1] for i in range(len(s) - 1)) % 2 == 0


def modular_arithmetic_simple(expr: str) -> int:
    """R: digits 0-4 joined by + - * (no brackets), evaluated mod 5."""
    if "(" in expr or ")" in expr:
        raise ValueError("modular_arithmetic_simple takes no brackets")
    return evaluate_mod5(expr)


def parity_check(s: str) -> bool:
    """R: is the number of b's even?"""
    return _check_str(s, "ab").count("b") % 2 == 0


def cycle_navigation(s: str) -> int:
    """R: symbols 0, 1, 2 move +0, +1, -1 on a cycle of 5 states starting at 0; return the final state."""
    return sum({"0": 0, "1": 1, "2": -1}[ch] for ch in _check_str(s, "012")) % 5


def modular_arithmetic(expr: str) -> int:
    """DCF: like the simple version, with brackets and unary minus."""
    return evaluate_mod5(expr)


def reverse_string(s: str) -> str:
    """DCF: the reversed string."""
    return _check_str(s, "ab")[::-1]


def solve_equation(expr: str) -> int | None:
    """DCF: the smallest ``z`` in ``0..4`` with ``expr(z) = 0 mod 5`` (by enumeration), or None."""
    if "z" not in expr:
        raise ValueError("the equation must contain the unknown z")
    for z in range(5):
        if evaluate_mod5(expr, z) == 0:
            return z
    return None


def stack_manipulation(stack: str, actions: Any) -> str:
    """DCF: apply actions ``"POP"``, ``"PUSH a"``, ``"PUSH b"`` to the stack string whose END is the top."""
    out = list(_check_str(stack, "ab", "stack"))
    for action in actions:
        if action == "POP":
            if out:
                out.pop()
        elif action in ("PUSH a", "PUSH b"):
            out.append(action[-1])
        else:
            raise ValueError(f"unknown action {action!r} (use 'POP', 'PUSH a', 'PUSH b')")
    return "".join(out)


def _binary_operands(expr: str, op: str) -> tuple[int, int]:
    text = expr.replace("×", "*")
    parts = text.split(op)
    if len(parts) != 2 or not all(parts) or any(set(p) - set("01") for p in parts):
        raise ValueError(f"expected '<binary>{op}<binary>', got {expr!r}")
    return int(parts[0], 2), int(parts[1], 2)


def binary_addition(expr: str) -> str:
    """CS: ``"10010+101"`` -> ``"10111"`` (MSB first)."""
    x, y = _binary_operands(expr, "+")
    return bin(x + y)[2:]


def binary_multiplication(expr: str) -> str:
    """CS: ``"100*10110"`` -> ``"1011000"`` (MSB first; ``×`` accepted)."""
    x, y = _binary_operands(expr, "*")
    return bin(x * y)[2:]


def compute_sqrt(s: str) -> str:
    """CS: floor of the square root of a binary number, in binary (MSB first)."""
    s = _check_str(s, "01")
    if not s:
        raise ValueError("empty binary string")
    return bin(math.isqrt(int(s, 2)))[2:]


def duplicate_string(s: str) -> str:
    """CS: ``w`` -> ``ww``."""
    return _check_str(s, "ab") * 2


def missing_duplicate(s: str) -> str:
    """CS: ``s`` is ``ww`` with one symbol replaced by ``_``; return the missing symbol."""
    s = _check_str(s, "ab_")
    if len(s) % 2 or s.count("_") != 1:
        raise ValueError("input must be a duplicated string of even length with exactly one '_'")
    half = len(s) // 2
    i = s.index("_")
    return s[i + half] if i < half else s[i - half]


def odds_first(s: str) -> str:
    """CS: t1 t3 t5 ... followed by t2 t4 t6 ... (1-based)."""
    s = _check_str(s, "ab")
    return s[0::2] + s[1::2]


def bucket_sort(s: str) -> str:
    """CS: sort a string over the digits 0-4."""
    return "".join(sorted(_check_str(s, "01234")))


def _ab(rng: np.random.Generator, length: int) -> str:
    return "".join(rng.choice(["a", "b"], size=length))


def _random_expr(rng: np.random.Generator, leaves: int, brackets: bool) -> str:
    if leaves == 1:
        text = str(int(rng.integers(0, 5)))
        return f"-{text}" if brackets and rng.random() < 0.15 else text
    left = int(rng.integers(1, leaves))
    op = "+-*"[int(rng.integers(0, 3))]
    text = f"{_random_expr(rng, left, brackets)}{op}{_random_expr(rng, leaves - left, brackets)}"
    if brackets and rng.random() < 0.5:
        text = f"({text})"
        if rng.random() < 0.2:
            text = f"-{text}"
    return text


def _gen_solve_equation(rng: np.random.Generator, length: int) -> tuple[str, int]:
    for _ in range(1000):
        expr = _random_expr(rng, max(length, 2), True)
        digits = [i for i, ch in enumerate(expr) if ch in "01234"]
        i = digits[int(rng.integers(0, len(digits)))]
        eq = expr[:i] + "z" + expr[i + 1:]
        roots = [z for z in range(5) if evaluate_mod5(eq, z) == 0]
        if len(roots) == 1:
            return eq, roots[0]
    raise RuntimeError("could not generate an equation with a unique solution")


def _gen_stack(rng: np.random.Generator, length: int) -> tuple[tuple[str, tuple[str, ...]], str]:
    stack = _ab(rng, length)
    actions = tuple(("POP", "PUSH a", "PUSH b")[int(rng.integers(0, 3))] for _ in range(length))
    return (stack, actions), stack_manipulation(stack, actions)


def _gen_missing(rng: np.random.Generator, length: int) -> tuple[str, str]:
    w = _ab(rng, max(length, 1))
    i = int(rng.integers(0, 2 * len(w)))
    s = w + w
    return s[:i] + "_" + s[i + 1:], s[i]


def _gen_binop(op: str, fn: Callable[[str], str]) -> Callable[[np.random.Generator, int], tuple[str, str]]:
    def gen(rng: np.random.Generator, length: int) -> tuple[str, str]:
        x = bin(int(rng.integers(0, 2 ** max(length, 1))))[2:]
        y = bin(int(rng.integers(0, 2 ** max(length, 1))))[2:]
        expr = f"{x}{op}{y}"
        return expr, fn(expr)
    return gen


@dataclass(frozen=True)
class CheTask:
    """One CHE task: its Chomsky level (``"R"``, ``"DCF"``, ``"CS"``), its rule and an instance generator
    ``generate(rng, length) -> (input, output)`` (``rng``: numpy Generator; ``length`` >= 1)."""
    level: str
    solve: Callable[..., Any]
    generate: Callable[[np.random.Generator, int], tuple[Any, Any]]


def _simple(fn: Callable[[str], Any], maker: Callable[[np.random.Generator, int], str]) -> Callable:
    def gen(rng: np.random.Generator, length: int) -> tuple[str, Any]:
        s = maker(rng, positive_int(length, "length"))
        return s, fn(s)
    return gen


CHE_TASKS: dict[str, CheTask] = {
    "even_pairs": CheTask("R", even_pairs, _simple(even_pairs, _ab)),
    "modular_arithmetic_simple": CheTask("R", modular_arithmetic_simple, _simple(
        modular_arithmetic_simple, lambda rng, n: _random_expr(rng, n, False))),
    "parity_check": CheTask("R", parity_check, _simple(parity_check, _ab)),
    "cycle_navigation": CheTask("R", cycle_navigation, _simple(
        cycle_navigation, lambda rng, n: "".join(rng.choice(list("012"), size=n)))),
    "modular_arithmetic": CheTask("DCF", modular_arithmetic, _simple(
        modular_arithmetic, lambda rng, n: _random_expr(rng, n, True))),
    "reverse_string": CheTask("DCF", reverse_string, _simple(reverse_string, _ab)),
    "solve_equation": CheTask("DCF", solve_equation, _gen_solve_equation),
    "stack_manipulation": CheTask("DCF", lambda inp: stack_manipulation(*inp), _gen_stack),
    "binary_addition": CheTask("CS", binary_addition, _gen_binop("+", binary_addition)),
    "binary_multiplication": CheTask("CS", binary_multiplication, _gen_binop("*", binary_multiplication)),
    "compute_sqrt": CheTask("CS", compute_sqrt, _simple(
        compute_sqrt, lambda rng, n: "1" + "".join(rng.choice(["0", "1"], size=n - 1)))),
    "duplicate_string": CheTask("CS", duplicate_string, _simple(duplicate_string, _ab)),
    "missing_duplicate": CheTask("CS", missing_duplicate, _gen_missing),
    "odds_first": CheTask("CS", odds_first, _simple(odds_first, _ab)),
    "bucket_sort": CheTask("CS", bucket_sort, _simple(
        bucket_sort, lambda rng, n: "".join(rng.choice(list("01234"), size=n)))),
}


# ---------------------------------------------------------------------------------------------- copy-first-token
POSITION_SCHEMES = ("standard", "random", "equal_mean")


def copy_first_token_batch(batch: int, n: int, generator: torch.Generator | None = None
                           ) -> tuple[torch.Tensor, torch.Tensor]:
    """Binary tokens ``(batch, n)`` and targets ``y_i = x_0`` for every position ``i`` (int64, same shape)."""
    batch = positive_int(batch, "batch")
    n = positive_int(n, "n")
    tokens = torch.randint(0, 2, (batch, n), generator=generator)
    return tokens, tokens[:, :1].expand(batch, n)


def training_positions(scheme: str, batch: int, n: int, L: int = 128,
                       generator: torch.Generator | None = None) -> torch.Tensor:
    """Training positions ``(batch, n)`` float64 for a scheme of :data:`POSITION_SCHEMES`: ``"standard"``
    (``arange(n)``), ``"random"`` (:func:`random_position_ids` from ``[0, L)``), ``"equal_mean"``
    (:func:`equal_mean_position_ids`, exponential with mean ``n``)."""
    if scheme == "standard":
        return torch.arange(n, dtype=torch.float64).expand(batch, n)
    if scheme == "random":
        return random_position_ids(batch, n, L, generator).double()
    if scheme == "equal_mean":
        return equal_mean_position_ids(batch, n, "exponential", generator=generator)
    raise ValueError(f"scheme must be one of {POSITION_SCHEMES}, got {scheme!r}")


def train_copy_first_token(model: torch.nn.Module, scheme: str, generator: torch.Generator, *, steps: int = 400,
                           batch: int = 64, lr: float = 2e-3, n_min: int = 2, n_max: int = 16, L: int = 128,
                           num_threads: int | None = 1, callback: Callable[[int, float], None] | None = None
                           ) -> list[float]:
    """Train ``model`` (``out_dim=2``) on copy-first-token with Adam; returns the cross-entropy history.

    Each step draws one length ``n ~ U{n_min..n_max}`` for the batch (``torch.randint(n_min, n_max+1, (1,))``),
    the tokens, then the positions of ``scheme`` (per sample), all from ``generator``.
    """
    from .tiny_transformer import train_model

    n_min = positive_int(n_min, "n_min")
    n_max = positive_int(n_max, "n_max", minimum=n_min)
    if scheme not in POSITION_SCHEMES:
        raise ValueError(f"scheme must be one of {POSITION_SCHEMES}, got {scheme!r}")

    def make_batch(step: int) -> tuple:
        n = int(torch.randint(n_min, n_max + 1, (1,), generator=generator))
        tokens, target = copy_first_token_batch(batch, n, generator)
        return (tokens, training_positions(scheme, batch, n, L, generator)), target

    def loss_fn(logits: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        return torch.nn.functional.cross_entropy(logits.reshape(-1, logits.shape[-1]),
                                                 target.reshape(-1).to(logits.device))

    return train_model(model, make_batch, loss_fn, steps=steps, lr=lr, num_threads=num_threads, callback=callback)


def copy_first_token_accuracy(model: torch.nn.Module, n: int, positions: Any, generator: torch.Generator,
                              num_sequences: int = 256, num_threads: int | None = 1) -> float:
    """Per-position accuracy: fraction of all ``num_sequences * n`` outputs whose argmax equals ``x_0``.

    ``positions``: ``(n,)`` or ``(num_sequences, n)`` (real-valued allowed for RoPE models)."""
    from .tiny_transformer import single_thread

    tokens, target = copy_first_token_batch(num_sequences, n, generator)
    with torch.no_grad(), single_thread(num_threads):
        pred = model(tokens, positions).argmax(-1).cpu()
    return float((pred == target).double().mean())
