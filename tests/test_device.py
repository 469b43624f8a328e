"""utils.device: BOOK_DEVICE / BOOK_SEED / BOOK_SCALE parsing and seeding."""
import numpy as np
import pytest
import torch

import utils
import sys

import utils.device  # noqa: F401  (the submodule; `utils.device` the attribute is the function)

dev = sys.modules["utils.device"]


def test_device_auto_and_cpu(monkeypatch):
    monkeypatch.setenv("BOOK_DEVICE", "cpu")
    assert dev.device() == torch.device("cpu")
    monkeypatch.setenv("BOOK_DEVICE", "auto")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert dev.device().type == expected


def test_device_rejects_bad_values(monkeypatch):
    monkeypatch.setenv("BOOK_DEVICE", "tpu")
    with pytest.raises(ValueError, match="BOOK_DEVICE"):
        dev.device()
    if not torch.cuda.is_available():
        monkeypatch.setenv("BOOK_DEVICE", "cuda")
        with pytest.raises(ValueError, match="no CUDA"):
            dev.device()


def test_seed_default_and_validation(monkeypatch):
    monkeypatch.delenv("BOOK_SEED", raising=False)
    assert dev.base_seed() == 0
    monkeypatch.setenv("BOOK_SEED", "3")
    assert dev.seed() == 3
    a = torch.rand(3)
    dev.seed(3)
    assert torch.equal(a, torch.rand(3))
    for bad in ("-1", "x"):
        monkeypatch.setenv("BOOK_SEED", bad)
        with pytest.raises(ValueError, match="BOOK_SEED"):
            dev.base_seed()
    with pytest.raises(ValueError, match="non-negative"):
        dev.seed(-2)


def test_streams_depend_on_base_seed_and_stream(monkeypatch):
    monkeypatch.setenv("BOOK_SEED", "0")
    a0, a1 = dev.rng(1).random(), dev.rng(2).random()
    assert a0 != a1 and dev.rng(1).random() == a0  # reproducible, and streams differ
    g = dev.torch_generator(1, device="cpu")
    t0 = torch.rand(2, generator=g)
    monkeypatch.setenv("BOOK_SEED", "1")
    assert dev.rng(1).random() != a0
    assert not torch.equal(torch.rand(2, generator=dev.torch_generator(1, device="cpu")), t0)
    with pytest.raises(ValueError, match="stream"):
        dev.rng(-1)


def test_scale(monkeypatch):
    monkeypatch.delenv("BOOK_SCALE", raising=False)
    assert dev.scale() == "small"
    monkeypatch.setenv("BOOK_SCALE", "FULL")
    assert dev.scale() == "full"
    monkeypatch.setenv("BOOK_SCALE", "huge")
    with pytest.raises(ValueError, match="BOOK_SCALE"):
        dev.scale()


def test_setup_notebook_mentions_settings(monkeypatch):
    monkeypatch.setenv("BOOK_DEVICE", "cpu")
    line = utils.setup_notebook()
    assert "device=cpu" in line and "scale=" in line and "seed=" in line
    import matplotlib as mpl

    assert mpl.rcParams["figure.facecolor"] in ("white", (1.0, 1.0, 1.0, 1.0))
    assert np.isfinite(float(torch.rand(1)))


def test_torch_generator_rejects_bad_stream():
    with pytest.raises(ValueError, match="stream"):
        dev.torch_generator(-3, device="cpu")
