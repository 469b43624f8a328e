"""Tests of utils.extrapolation: position samplers, order statistics, CHE rules, the copy-first-token harness."""
import itertools
import math

import numpy as np
import pytest
import torch

from utils.extrapolation import (CHE_TASKS, binary_addition, binary_multiplication, bucket_sort, compute_sqrt,
                                 copy_first_token_accuracy, copy_first_token_batch, cycle_navigation,
                                 duplicate_string, equal_mean_position_ids, evaluate_mod5, even_pairs,
                                 missing_duplicate, modular_arithmetic, modular_arithmetic_simple, odds_first,
                                 order_statistic_moments, parity_check, random_position_ids, reverse_string,
                                 solve_equation, stack_manipulation, train_copy_first_token, training_positions,
                                 uniform_position_grid)
from utils.tiny_transformer import TinyTransformer


def test_random_position_ids_properties_and_uniformity():
    g = torch.Generator().manual_seed(0)
    ids = random_position_ids(4000, 5, 12, g)
    assert ids.shape == (4000, 5) and ids.dtype == torch.int64
    assert bool((ids.diff(dim=-1) > 0).all()) and int(ids.min()) >= 0 and int(ids.max()) < 12
    # every id appears in a fraction N/L of the samples (binomial SE ~ 0.007)
    freq = torch.stack([(ids == k).any(-1).double().mean() for k in range(12)])
    assert float((freq - 5 / 12).abs().max()) < 0.04
    with pytest.raises(ValueError, match="N <= L"):
        random_position_ids(2, 13, 12)
    with pytest.raises(ValueError, match="batch"):
        random_position_ids(0, 3, 12)


def test_uniform_position_grid():
    grid = uniform_position_grid(512, 2048)
    assert grid[:3].tolist() == [0, 4, 8] and int(grid[-1]) == 2044 and len(grid) == 512
    assert uniform_position_grid(5, 128, endpoint=True).tolist() == [0, 32, 64, 95, 127]
    np.testing.assert_array_equal(uniform_position_grid(16, 128, endpoint=True).numpy(),
                                  np.round(np.linspace(0, 127, 16)).astype(int))
    with pytest.raises(ValueError, match="M <= L"):
        uniform_position_grid(10, 5)


def test_order_statistic_moments_exact_enumeration():
    L, N = 9, 4
    subsets = np.array(list(itertools.combinations(range(L), N)), dtype=float)   # sorted draws, all equally likely
    mean, var = order_statistic_moments(N, L)
    np.testing.assert_allclose(mean, subsets.mean(0), rtol=1e-12)
    np.testing.assert_allclose(var, subsets.var(0), rtol=1e-12)
    with pytest.raises(ValueError, match="N <= L"):
        order_statistic_moments(10, 9)


def test_equal_mean_position_ids():
    g = torch.Generator().manual_seed(1)
    pos = equal_mean_position_ids(20000, 8, generator=g)
    assert pos.shape == (20000, 8) and pos.dtype == torch.float64 and bool((pos[:, 0] == 0).all())
    assert bool((pos.diff(dim=-1) >= 0).all())
    # mean sequence = linspace(0, 1, N) * N; the last entry has sd N / sqrt(R) ~ 0.057
    assert abs(float(pos[:, -1].mean()) - 8.0) < 5 * 8 / math.sqrt(20000)
    # the spec's recipe: exponential draws from the same generator, times n, times linspace
    g1, g2 = torch.Generator().manual_seed(5), torch.Generator().manual_seed(5)
    ref = torch.linspace(0, 1, 6, dtype=torch.float64) * (torch.empty(3, 1, dtype=torch.float64)
                                                          .exponential_(1.0, generator=g2) * 6)
    torch.testing.assert_close(equal_mean_position_ids(3, 6, generator=g1), ref)
    beta = equal_mean_position_ids(20000, 4, "beta", mean=64, M=512, alpha=0.5, generator=g)
    assert float(beta[:, -1].max()) <= 512 and abs(float(beta[:, -1].mean()) - 64) < 5 * 90 / math.sqrt(20000)
    with pytest.raises(ValueError, match="beta"):
        equal_mean_position_ids(2, 4, "beta", M=2, alpha=1.0)
    with pytest.raises(ValueError, match="dist"):
        equal_mean_position_ids(2, 4, "poisson")
    with pytest.raises(ValueError, match="N must be"):
        equal_mean_position_ids(2, 1)


def test_che_worked_examples():
    assert even_pairs("aabba") is True
    assert modular_arithmetic_simple("1+2-4") == 4
    assert parity_check("aaabba") is True
    assert cycle_navigation("010211") == 2
    assert modular_arithmetic("−(1−2)×(4−3×(−2))") == 0
    assert reverse_string("aabba") == "abbaa"
    assert solve_equation("−(1−2)×(4−z×(−2))") == 3
    assert stack_manipulation("abbaa", ["POP", "PUSH a", "POP"]) == "abba"
    assert binary_addition("10010+101") == "10111"
    assert binary_multiplication("100×10110") == "1011000"
    assert duplicate_string("abaab") == "abaababaab"
    assert missing_duplicate("ab_aba") == "a"
    assert odds_first("aaabaa") == "aaaaba"
    assert bucket_sort("421302214") == "011222344"
    assert compute_sqrt("101001") == "110"          # the article's "101" is wrong: 6^2 = 36 <= 41


def test_evaluate_mod5_against_python_eval():
    rng = np.random.default_rng(0)
    for _ in range(300):
        expr, out = CHE_TASKS["modular_arithmetic"].generate(rng, int(rng.integers(1, 8)))
        assert out == eval(expr) % 5                                   # noqa: S307 (digits and + - * ( ) only)
    with pytest.raises(ValueError, match="malformed"):
        evaluate_mod5("1+")
    with pytest.raises(ValueError, match="malformed"):
        evaluate_mod5("(1+2")
    with pytest.raises(ValueError, match="string over"):
        evaluate_mod5("7+1")


@pytest.mark.parametrize("name", sorted(CHE_TASKS))
def test_che_generators_are_consistent(name):
    rng = np.random.default_rng(1)
    task = CHE_TASKS[name]
    assert task.level in ("R", "DCF", "CS")
    for length in (1, 3, 10):
        inp, out = task.generate(rng, length)
        assert task.solve(inp) == out


def test_che_properties():
    rng = np.random.default_rng(2)
    for _ in range(200):
        s, out = CHE_TASKS["even_pairs"].generate(rng, int(rng.integers(1, 20)))
        assert out == (s[0] == s[-1])
        eq, z = CHE_TASKS["solve_equation"].generate(rng, 5)
        assert evaluate_mod5(eq, z) == 0
        s, r = CHE_TASKS["compute_sqrt"].generate(rng, 12)
        assert int(r, 2) ** 2 <= int(s, 2) < (int(r, 2) + 1) ** 2


def test_che_bad_input():
    with pytest.raises(ValueError, match="string over"):
        even_pairs("abc")
    with pytest.raises(ValueError, match="unknown action"):
        stack_manipulation("ab", ["PUSH c"])
    with pytest.raises(ValueError, match="binary"):
        binary_addition("102+1")
    with pytest.raises(ValueError, match="exactly one"):
        missing_duplicate("abab")
    with pytest.raises(ValueError, match="unknown z"):
        solve_equation("1+2")
    with pytest.raises(ValueError, match="empty"):
        compute_sqrt("")


def test_copy_first_token_harness():
    g = torch.Generator().manual_seed(0)
    tokens, target = copy_first_token_batch(3, 5, g)
    assert torch.equal(target, tokens[:, :1].expand(3, 5))
    assert training_positions("standard", 2, 4).tolist() == [[0, 1, 2, 3]] * 2
    assert training_positions("random", 2, 4, 16, g).shape == (2, 4)
    assert training_positions("equal_mean", 2, 4, generator=g).dtype == torch.float64
    with pytest.raises(ValueError, match="scheme"):
        training_positions("alibi", 2, 4)
    model = TinyTransformer(2, 16, 2, 1, d_ff=32, out_dim=2, pos="rope", seed=0)
    hist = train_copy_first_token(model, "random", torch.Generator().manual_seed(1), steps=30, batch=8, n_max=6)
    assert len(hist) == 30 and hist[-1] < hist[0]
    acc = copy_first_token_accuracy(model, 6, torch.arange(6), torch.Generator().manual_seed(2), num_sequences=16)
    assert 0.0 <= acc <= 1.0
    with pytest.raises(ValueError, match="scheme"):
        train_copy_first_token(model, "xl", torch.Generator())
