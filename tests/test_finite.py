"""dejavu.finite: the rows holding NaN or Inf, found through a sum in the usual all-finite case."""

import pytest
import torch

from dejavu import finite
from dejavu.finite import non_finite_rows


def test_a_finite_matrix_has_no_bad_rows():
    assert non_finite_rows(torch.randn(50, 8)) == []
    assert non_finite_rows(torch.empty(0, 4)) == []


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), float("-inf")])
def test_every_bad_row_is_listed_in_order(bad):
    x = torch.zeros(6, 3)
    x[4, 0] = bad
    x[1, 2] = bad
    assert non_finite_rows(x) == [1, 4]


def test_inf_and_minus_inf_do_not_cancel():
    x = torch.zeros(3, 2)
    x[0, 0], x[2, 1] = float("inf"), float("-inf")
    assert non_finite_rows(x) == [0, 2]


def test_a_sum_that_overflows_over_finite_values_is_not_an_error():
    x = torch.full((4, 2), 3e38)  # each value is a finite float32; their sum is not
    assert not torch.isfinite(x.sum())
    assert non_finite_rows(x) == []


def test_rows_are_checked_in_blocks_and_keep_their_positions(monkeypatch):
    monkeypatch.setattr(finite, "_BLOCK_ELEMENTS", 6)  # two rows of 3 per block
    x = torch.zeros(7, 3)
    x[3, 1] = x[6, 0] = float("nan")
    assert non_finite_rows(x) == [3, 6]


def test_integer_tensors_hold_no_nan():
    assert non_finite_rows(torch.ones(3, 2, dtype=torch.long)) == []
