"""utils.claims: a false claim raises with its numbers; every verdict lands in the ledger and the summary."""
import json

import numpy as np
import pytest
import torch

from utils import claims


@pytest.fixture(autouse=True)
def ledger(tmp_path, monkeypatch):
    monkeypatch.setenv("BOOK_LEDGER", str(tmp_path))
    claims.reset()
    yield tmp_path
    claims.reset()


def read(ledger, slug="demo-chapter"):
    return [json.loads(line) for line in (ledger / f"{slug}.jsonl").read_text().splitlines()]


def test_false_claim_raises_with_numbers(ledger):
    with pytest.raises(AssertionError) as info:
        claims.check("demo-chapter/C1", 1.2345, expected=1.0, tol=0.01, note="toy")
    message = str(info.value)
    assert "demo-chapter/C1" in message and "1.2345" in message and "0.01" in message and "toy" in message
    assert read(ledger)[-1]["verdict"] == "fail"


def test_true_claim_passes_and_is_recorded(ledger):
    assert claims.check("demo-chapter/C2", 0.999, expected=1.0, tol=1e-2) == 0.999
    claims.check("demo-chapter/C2", 2.0, expected=2.1, tol=0.05, rel=True)
    rows = read(ledger)
    assert [r["verdict"] for r in rows] == ["pass", "pass"]
    assert rows[0]["measured"] == 0.999 and rows[0]["expected"] == 1.0 and rows[0]["tol"] == 0.01


@pytest.mark.parametrize("op,measured,bound,ok", [
    ("le", 1.0, 1.0, True), ("lt", 1.0, 1.0, False), ("ge", 1.0, 1.0, True), ("gt", 1.0, 1.0, False),
    ("le", 1.1, 1.0, False), ("ge", 0.9, 1.0, False)])
def test_inequalities(op, measured, bound, ok):
    if ok:
        claims.check("demo-chapter/C3", measured, bound, op=op)
    else:
        with pytest.raises(AssertionError):
            claims.check("demo-chapter/C3", measured, bound, op=op)


def test_arrays_must_pass_everywhere(ledger):
    claims.check("demo-chapter/C4", torch.tensor([1.0, 2.0]), np.array([1.0, 2.0 + 1e-12]), tol=1e-10)
    with pytest.raises(AssertionError, match="1 of 3"):
        claims.check("demo-chapter/C4", [0.1, 0.2, 0.9], 0.5, op="le")
    with pytest.raises(AssertionError):  # NaN never passes
        claims.check("demo-chapter/C4", float("nan"), 0.0, tol=1.0)


def test_boolean_claims(ledger):
    claims.check("demo-chapter/C5", True)
    claims.check("demo-chapter/C5", np.bool_(True))
    with pytest.raises(AssertionError, match="condition is False"):
        claims.check("demo-chapter/C5", torch.tensor(False), note="why")
    with pytest.raises(ValueError, match="boolean"):
        claims.check("demo-chapter/C5", 0.3)


def test_bad_arguments(ledger):
    with pytest.raises(ValueError, match="slug/C"):
        claims.check("C1", True)
    with pytest.raises(ValueError, match="op"):
        claims.check("demo-chapter/C1", 1.0, 1.0, op="approx")
    with pytest.raises(ValueError, match="non-negative"):
        claims.check("demo-chapter/C1", 1.0, 1.0, tol=-1)
    with pytest.raises(ValueError, match="broadcast"):
        claims.check("demo-chapter/C1", [1.0, 2.0], [1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="reason"):
        claims.not_reproducible("demo-chapter/C1", "  ")


def test_not_reproducible_and_summary(ledger):
    claims.check("demo-chapter/C2", 1.0, 1.0)
    claims.check("demo-chapter/C10", 3.0, 2.0, op="ge")
    claims.check("demo-chapter/C10", np.array([3.0]), np.array([[2.0]]), op="ge")  # one-element arrays
    claims.not_reproducible("demo-chapter/C1", "needs a pretrained model", substitute="a toy model")
    table = claims.summary("demo-chapter")
    assert [row[0] for row in table.rows] == ["demo-chapter/C1", "demo-chapter/C2", "demo-chapter/C10"]
    assert table.rows[0][1] == "not reproducible"
    assert table.rows[2][3] == "≥ 2\n≥ 2" and table.rows[2][2] == "3\n3"
    assert "<table>" in table._repr_html_() and "| claim |" in repr(table)
    assert read(ledger)[-1]["verdict"] == "not reproducible"


def test_rerun_replaces_ledger(ledger):
    claims.check("demo-chapter/C1", True)
    claims.reset()  # a new process
    claims.check("demo-chapter/C2", True)
    assert [r["claim"] for r in read(ledger)] == ["demo-chapter/C2"]
