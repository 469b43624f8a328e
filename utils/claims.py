"""The claims helper: every claim of a chapter ends in one call of :func:`check`.

``check`` compares a measured value with an expectation, raises ``AssertionError`` with the numbers when the claim
fails (which fails the chapter, and CI), records the result for the chapter's summary table and appends one JSON line
to the ledger (directory ``BOOK_LEDGER``, default ``_build/claims`` under the repository root), one file per chapter.

Comparisons (``op``):

* ``"close"`` (default): ``|measured - expected| <= tol`` (``tol`` relative to ``|expected|`` when ``rel=True``);
  ``tol=None`` means exact equality.
* ``"le"`` / ``"lt"``: ``measured <= expected + tol`` / ``measured < expected`` (an upper bound holds);
* ``"ge"`` / ``"gt"``: ``measured >= expected - tol`` / ``measured > expected`` (a lower bound holds).
* ``expected=None`` with a boolean ``measured``: the claim passes when it is ``True``.

Arrays are compared elementwise and must pass everywhere; the ledger keeps the worst element.
"""
from __future__ import annotations

import json
import math
import os
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

__all__ = ["check", "not_reproducible", "summary", "records", "reset", "ledger_dir"]

_CLAIM_ID = re.compile(r"^[a-z0-9]+(?:-[a-z0-9]+)*/C\d+$")
_OPS = ("close", "le", "lt", "ge", "gt")
_REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass
class ClaimRecord:
    """One verified (or recorded) claim."""

    claim: str
    verdict: str  # "pass" | "fail" | "not reproducible"
    measured: Any = None
    expected: Any = None
    tol: Any = None
    rel: bool = False
    op: str = "close"
    note: str = ""
    seed: int | None = None
    device: str | None = None
    time: float = field(default_factory=time.time)


_RECORDS: list[ClaimRecord] = []
_OPENED: set[Path] = set()


def ledger_dir() -> Path:
    """Folder of the JSON-lines ledger (``BOOK_LEDGER`` or ``<repo>/_build/claims``)."""
    raw = os.environ.get("BOOK_LEDGER")
    return Path(raw) if raw else _REPO_ROOT / "_build" / "claims"


def _jsonable(value: Any) -> Any:
    if value is None or isinstance(value, (bool, str)):
        return value
    if hasattr(value, "detach"):  # torch tensor
        value = value.detach().cpu().numpy()
    if isinstance(value, np.ndarray):
        return value.tolist() if value.size <= 64 else f"array{value.shape}"
    if isinstance(value, (np.bool_,)):
        return bool(value)
    if isinstance(value, (int, np.integer)):
        return int(value)
    if isinstance(value, (float, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else str(value)
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return str(value)


def _write(record: ClaimRecord) -> None:
    slug = record.claim.split("/")[0]
    folder = ledger_dir()
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{slug}.jsonl"
    mode = "a" if path in _OPENED else "w"  # a fresh run of a chapter replaces its old ledger
    _OPENED.add(path)
    row = {k: _jsonable(v) for k, v in asdict(record).items()}
    with path.open(mode, encoding="utf-8") as fh:
        fh.write(json.dumps(row, ensure_ascii=False) + "\n")


def _context() -> tuple[int | None, str | None]:
    from .device import base_seed, device

    try:
        return base_seed(), str(device())
    except ValueError:
        return None, None


def _as_array(value: Any, name: str) -> np.ndarray:
    if hasattr(value, "detach"):
        value = value.detach().cpu().numpy()
    try:
        arr = np.asarray(value, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{name} must be numeric (a number, array or tensor), got {type(value).__name__}") from None
    return arr


def _fmt(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, (bool, np.bool_)):
        return str(bool(value))
    arr = np.asarray(value.detach().cpu().numpy() if hasattr(value, "detach") else value)
    if arr.size == 1:
        item = arr.reshape(-1)[0].item()  # works for shape () and (1,), (1, 1), ...
        return f"{item:.6g}" if isinstance(item, float) else str(item)
    return np.array2string(arr, precision=4, threshold=8, separator=", ")


def check(claim_id: str, ok_or_measured: Any, expected: Any = None, tol: Any = None, rel: bool = False,
          note: str = "", *, op: str = "close") -> Any:
    """Verify one claim; raise ``AssertionError`` with the numbers when it fails.

    Args:
        claim_id: the spec's ID, e.g. ``"jl-lemma-theory/C8"`` (a literal string in the verifying cell).
        ok_or_measured: a boolean (when ``expected`` is None) or the measured number/array/tensor.
        expected: the expected value or bound (number or array broadcastable against ``measured``).
        tol: non-negative tolerance (number or array); ``None`` means 0. Derive it and say how in ``note``.
        rel: ``tol`` is relative to ``|expected|``.
        note: what was compared and where the tolerance comes from (shown in the summary and ledger).
        op: ``"close"`` | ``"le"`` | ``"lt"`` | ``"ge"`` | ``"gt"`` (see the module docstring).

    Returns:
        ``ok_or_measured``, so that the call can end a cell and show the value.
    """
    if not isinstance(claim_id, str) or not _CLAIM_ID.match(claim_id):
        raise ValueError(f"claim_id must look like 'slug/C<k>', got {claim_id!r}")
    if op not in _OPS:
        raise ValueError(f"op must be one of {_OPS}, got {op!r}")
    if not isinstance(note, str):
        raise ValueError("note must be a string")
    seed_value, device_name = _context()
    if expected is None:
        if tol is not None or op != "close":
            raise ValueError("tol and op need an expected value")
        value = ok_or_measured
        if hasattr(value, "numel") and value.numel() == 1:  # one-element torch tensor
            value = value.item()
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = value.item()
        if not isinstance(value, (bool, np.bool_)):
            raise ValueError("without an expected value, check() needs a boolean outcome, "
                             f"got {type(ok_or_measured).__name__}")
        ok = bool(value)
        record = ClaimRecord(claim_id, "pass" if ok else "fail", measured=ok, note=note,
                             seed=seed_value, device=device_name)
        detail = f"{claim_id}: condition is False" + (f" ({note})" if note else "")
    else:
        measured = _as_array(ok_or_measured, "measured")
        target = _as_array(expected, "expected")
        tolerance = _as_array(0.0 if tol is None else tol, "tol")
        if np.any(tolerance < 0) or np.any(np.isnan(tolerance)):
            raise ValueError(f"tol must be non-negative, got {tol!r}")
        try:
            measured_b, target_b, tol_b = np.broadcast_arrays(measured, target, tolerance)
        except ValueError:
            raise ValueError(f"measured {measured.shape}, expected {target.shape} and tol {tolerance.shape} "
                             "do not broadcast") from None
        if rel:
            tol_b = tol_b * np.abs(target_b)
        with np.errstate(invalid="ignore"):
            if op == "close":
                slack = tol_b - np.abs(measured_b - target_b)
                passed = slack >= 0
            elif op == "le":
                slack = target_b + tol_b - measured_b
                passed = slack >= 0
            elif op == "lt":
                slack = target_b + tol_b - measured_b
                passed = slack > 0
            elif op == "ge":
                slack = measured_b - (target_b - tol_b)
                passed = slack >= 0
            else:  # gt
                slack = measured_b - (target_b - tol_b)
                passed = slack > 0
        passed = passed & np.isfinite(measured_b)
        ok = bool(np.all(passed))
        if measured_b.size > 1:  # keep the worst element in the record
            worst = int(np.nanargmin(np.where(np.isfinite(slack), slack, -np.inf)))
            shown = (measured_b.flat[worst], target_b.flat[worst], tol_b.flat[worst])
        else:
            shown = (measured_b.item(), target_b.item(), tol_b.item())
        record = ClaimRecord(claim_id, "pass" if ok else "fail",
                             measured=measured if measured.size <= 64 else shown[0],
                             expected=target if target.size <= 64 else shown[1],
                             tol=None if tol is None else (tolerance if tolerance.size <= 64 else shown[2]),
                             rel=rel, op=op, note=note, seed=seed_value, device=device_name)
        symbol = {"close": "≈", "le": "≤", "lt": "<", "ge": "≥", "gt": ">"}[op]
        n_bad = int(np.size(passed) - np.count_nonzero(passed))
        detail = (f"{claim_id}: measured {shown[0]:.10g} {symbol} expected {shown[1]:.10g} fails "
                  f"(tolerance {shown[2]:.3g}{' relative' if rel else ''}; {n_bad} of {np.size(passed)} "
                  f"element(s) fail)" + (f" [{note}]" if note else ""))
    _RECORDS.append(record)
    _write(record)
    if not ok:
        raise AssertionError(detail)
    return ok_or_measured


def not_reproducible(claim_id: str, reason: str, substitute: str = "") -> None:
    """Record a claim that truly needs resources we do not have (a pretrained model, private data).

    ``reason`` says what is missing; ``substitute`` says what the chapter shows instead.
    """
    if not isinstance(claim_id, str) or not _CLAIM_ID.match(claim_id):
        raise ValueError(f"claim_id must look like 'slug/C<k>', got {claim_id!r}")
    if not isinstance(reason, str) or not reason.strip():
        raise ValueError("not_reproducible needs a non-empty reason")
    seed_value, device_name = _context()
    note = reason.strip() + (f" Substitute shown: {substitute.strip()}" if substitute.strip() else "")
    record = ClaimRecord(claim_id, "not reproducible", note=note, seed=seed_value, device=device_name)
    _RECORDS.append(record)
    _write(record)


def records(slug: str | None = None) -> list[ClaimRecord]:
    """The records of this process (of one chapter when ``slug`` is given)."""
    return [r for r in _RECORDS if slug is None or r.claim.split("/")[0] == slug]


def reset() -> None:
    """Forget this process's records (tests use it)."""
    _RECORDS.clear()
    _OPENED.clear()


class _Table:
    """A small table that renders as HTML in notebooks and as markdown text elsewhere."""

    def __init__(self, header: list[str], rows: list[list[str]]):
        self.header, self.rows = header, rows

    def _repr_html_(self) -> str:
        import html

        head = "".join(f"<th>{html.escape(h)}</th>" for h in self.header)
        body = "".join("<tr>" + "".join(f"<td>{html.escape(c).replace(chr(10), '<br>')}</td>" for c in row) + "</tr>"
                       for row in self.rows)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __repr__(self) -> str:
        lines = ["| " + " | ".join(self.header) + " |", "|" + "---|" * len(self.header)]
        lines += ["| " + " | ".join(c.replace("\n", "; ") for c in row) + " |" for row in self.rows]
        return "\n".join(lines)


def summary(slug: str | None = None) -> _Table:
    """The chapter's claims table: one row per claim (ID, verdict, measured, expected, tolerance).

    A claim verified by several checks shows each check on its own line within the row; its verdict is
    ``pass`` only when every check passed.
    """
    grouped: dict[str, list[ClaimRecord]] = {}
    for record in records(slug):
        grouped.setdefault(record.claim, []).append(record)

    def order(claim: str) -> tuple[str, int]:
        head, num = claim.rsplit("/C", 1)
        return head, int(num)

    rows = []
    for claim in sorted(grouped, key=order):
        group = grouped[claim]
        verdicts = {r.verdict for r in group}
        verdict = "fail" if "fail" in verdicts else ("pass" if verdicts == {"pass"} else
                                                      "not reproducible" if verdicts == {"not reproducible"}
                                                      else "pass + not reproducible")
        checks = [r for r in group if r.verdict != "not reproducible"]
        rel = lambda r: " (rel.)" if r.rel else ""
        rows.append([
            claim,
            f"{verdict} ({len(checks)} check{'s' if len(checks) != 1 else ''})" if checks else verdict,
            "\n".join(_fmt(r.measured) for r in checks) or "—",
            "\n".join(("" if r.expected is None else {"close": "≈ ", "le": "≤ ", "lt": "< ", "ge": "≥ ",
                                                      "gt": "> "}[r.op] + _fmt(r.expected)) for r in checks) or "—",
            "\n".join((_fmt(r.tol) + rel(r)) if r.tol is not None else "" for r in checks) or "—",
        ])
    return _Table(["claim", "verdict", "measured", "expected", "tolerance"], rows)
