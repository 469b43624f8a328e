"""End to end: a chapter with a false claim fails when executed, with the numbers in the error; a true one passes
and lands in the ledger. Uses nbclient, the engine under nbmake (one kernel start, a few seconds)."""
import json
import sys
from pathlib import Path

import nbformat
import pytest
from nbclient import NotebookClient
from nbclient.exceptions import CellExecutionError

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tools"))
from bootstrap_cell import BOOTSTRAP_SOURCE  # noqa: E402


def run_notebook(tmp_path, monkeypatch, claim_code: str):
    monkeypatch.setenv("BOOK_LEDGER", str(tmp_path / "ledger"))
    monkeypatch.setenv("BOOK_ROOT", str(ROOT))  # the temporary notebook lives outside the checkout
    nb = nbformat.v4.new_notebook()
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.cells = [nbformat.v4.new_code_cell(BOOTSTRAP_SOURCE), nbformat.v4.new_code_cell(claim_code)]
    NotebookClient(nb, timeout=120, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}).execute()
    return [json.loads(line) for line in (tmp_path / "ledger" / "demo-chapter.jsonl").read_text().splitlines()]


def test_false_claim_fails_the_notebook(tmp_path, monkeypatch):
    with pytest.raises(CellExecutionError) as info:
        run_notebook(tmp_path, monkeypatch, 'utils.check("demo-chapter/C1", 1.25, expected=1.0, tol=0.1)')
    message = str(info.value)
    assert "AssertionError" in message and "demo-chapter/C1" in message and "1.25" in message
    ledger = [json.loads(line) for line in (tmp_path / "ledger" / "demo-chapter.jsonl").read_text().splitlines()]
    assert ledger[-1]["verdict"] == "fail"


def test_true_claim_passes_and_is_recorded(tmp_path, monkeypatch):
    ledger = run_notebook(tmp_path, monkeypatch, 'utils.check("demo-chapter/C1", 1.05, expected=1.0, tol=0.1)')
    assert len(ledger) == 1 and ledger[0]["verdict"] == "pass" and ledger[0]["measured"] == 1.05
