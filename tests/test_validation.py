"""Bad input gives a clear ValueError: the kernels not already covered by their module's own tests."""
import numpy as np
import pytest
import torch

from utils import attention, enlargement, extrapolation, hubness, initialisation, positions, sinusoidal

CASES = {
    "positions.rope_frequencies odd d": (lambda: positions.rope_frequencies(3), "even"),
    "positions.rope_matrix odd d": (lambda: positions.rope_matrix(1.0, 3), "even"),
    "positions.rope_decay_curve odd d": (lambda: positions.rope_decay_curve(torch.tensor([1, 2]), 3), "even"),
    "positions.axial_positions empty grid": (lambda: positions.axial_positions(0, 3), "h must"),
    "positions.rope_2d_matrix d not /4": (lambda: positions.rope_2d_matrix(1.0, 2.0, 6), "divisible by 4"),
    "positions.sinusoidal_shift_matrix odd d": (lambda: positions.sinusoidal_shift_matrix(1.0, 3), "even"),
    "positions.sinusoidal_gram odd d": (lambda: positions.sinusoidal_gram(torch.tensor([1.0]), 3), "even"),
    "positions.quaternion_exp shape": (lambda: positions.quaternion_exp(np.zeros(2)), "size 4"),
    "positions.quaternion_left_matrix shape": (lambda: positions.quaternion_left_matrix(np.zeros(3)), "size 4"),
    "attention.attention_matrix dims": (lambda: attention.attention_matrix(torch.zeros(3, 4), torch.zeros(3, 5)),
                                        "same last dimension"),
    "attention.linear_attention_matrix dims": (
        lambda: attention.linear_attention_matrix(torch.zeros(3, 4), torch.zeros(3, 5)), "same last dimension"),
    "attention.linear_attention_naive dims": (
        lambda: attention.linear_attention_naive(torch.zeros(3, 4), torch.zeros(3, 5), torch.zeros(3, 2)),
        "same last dimension"),
    "attention.linear_attention_entropy dims": (
        lambda: attention.linear_attention_entropy(torch.zeros(3, 4), torch.zeros(3, 5)), "same last dimension"),
    "hubness.hub_counts k": (lambda: hubness.hub_counts(torch.zeros(5, 3), 0), "k must"),
    "initialisation.fan_in_truncated_normal fan_in": (lambda: initialisation.fan_in_truncated_normal(0, 3), "fan_in"),
    "enlargement.enlarge_embedding k": (lambda: enlargement.enlarge_embedding(torch.zeros(4, 2), 0), "k must"),
    "sinusoidal.count_distinct_columns shape": (lambda: sinusoidal.count_distinct_columns(torch.zeros(3)), "matrix"),
    "extrapolation.parity_check input": (lambda: extrapolation.parity_check(-1), "string"),
    "extrapolation.copy_first_token_batch batch": (lambda: extrapolation.copy_first_token_batch(0, 5), "batch"),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_bad_input_raises_value_error(name):
    call, match = CASES[name]
    with pytest.raises(ValueError, match=match):
        call()
