"""The linear probe that linear_probe and ood both train is fitted once per identical input.

`select_and_refit` keeps its last few results keyed by a digest of the features, labels, grid and
solver options; the fit is deterministic, so a kept result must equal a fresh fit exactly. The
number of fits is read from the stage timer's `probe_fit` entries (no timing is asserted).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from bobench import stage_timer
from bobench.protocols import linear_probe
from bobench.protocols.linear_probe import select_and_refit
from bobench.protocols.metrics import l2_normalize

GRID = np.asarray([0.1, 1.0, 10.0])
OPTIONS = {"max_iter": 1000, "tol": 1e-4}


def _blobs(seed: int = 0, n_per_class: int = 30, d: int = 16, k: int = 3):
    rng = np.random.default_rng(seed)
    centres = rng.normal(size=(k, d)) * 2.0
    y = np.repeat(np.arange(k), n_per_class)
    x = l2_normalize(centres[y] + rng.normal(size=(len(y), d)))
    order = rng.permutation(len(y))
    x, y = x[order], y[order]
    cut = len(y) * 2 // 3
    return x[:cut], y[:cut], x[cut:], y[cut:]


@pytest.fixture(autouse=True)
def _empty_memo(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(linear_probe, "_SELECTED", type(linear_probe._SELECTED)())


def test_identical_inputs_are_fitted_once_and_equal_a_fresh_fit() -> None:
    x_tr, y_tr, x_va, y_va = _blobs()
    with stage_timer.recording() as table:
        first = select_and_refit(x_tr, y_tr, x_va, y_va, GRID, OPTIONS)
        again = select_and_refit(x_tr.copy(), y_tr.copy(), x_va.copy(), y_va.copy(), GRID, dict(OPTIONS))
    assert again is first
    assert table.entries["probe_fit"] == 2  # the sweep and the refit, once
    linear_probe._SELECTED.clear()
    fresh = select_and_refit(x_tr, y_tr, x_va, y_va, GRID, OPTIONS)
    assert fresh is not first and fresh.chosen_C == first.chosen_C
    assert torch.equal(fresh.final.weights, first.final.weights)
    assert torch.equal(fresh.final.bias, first.final.bias)
    np.testing.assert_array_equal(fresh.val_accuracy, first.val_accuracy)


@pytest.mark.parametrize("change", ["label", "feature", "grid", "options"])
def test_any_change_of_input_is_a_new_fit(change: str) -> None:
    x_tr, y_tr, x_va, y_va = _blobs()
    grid, options = GRID, OPTIONS
    first = select_and_refit(x_tr, y_tr, x_va, y_va, grid, options)
    if change == "label":
        y_tr = y_tr.copy()
        y_tr[0] = (y_tr[0] + 1) % 3
    elif change == "feature":
        x_tr = x_tr.copy()
        x_tr[0, 0] += np.float32(1e-3)
    elif change == "grid":
        grid = np.asarray([0.1, 1.0, 100.0])
    else:
        options = {"max_iter": 1000, "tol": 1e-5}
    with stage_timer.recording() as table:
        second = select_and_refit(x_tr, y_tr, x_va, y_va, grid, options)
    assert second is not first and table.entries["probe_fit"] == 2


def test_only_the_last_few_inputs_are_kept() -> None:
    for seed in range(linear_probe._SELECTED_KEPT + 2):
        select_and_refit(*_blobs(seed), GRID, OPTIONS)
    assert len(linear_probe._SELECTED) == linear_probe._SELECTED_KEPT
    with stage_timer.recording() as table:  # the oldest one was dropped: fitted again
        select_and_refit(*_blobs(0), GRID, OPTIONS)
    assert table.entries["probe_fit"] == 2


def test_a_small_probe_is_solved_on_one_thread_whatever_torch_is_set_to() -> None:
    """Below SINGLE_THREAD_ROWS the fit is the same under any torch thread setting (it runs on one),
    and the caller's setting is restored afterwards."""
    from bobench.protocols.logistic import SINGLE_THREAD_ROWS, fit_logistic_grid

    x_tr, y_tr, _, _ = _blobs(n_per_class=150, d=512)  # big enough that torch splits its ops
    assert len(x_tr) < SINGLE_THREAD_ROWS
    before = torch.get_num_threads()
    try:
        fits = []
        for threads in (1, 2, 4):
            torch.set_num_threads(threads)
            fits.append(fit_logistic_grid(x_tr, y_tr, GRID, **OPTIONS))
            assert torch.get_num_threads() == threads
    finally:
        torch.set_num_threads(before)
    for other in fits[1:]:
        assert torch.equal(other.weights, fits[0].weights) and torch.equal(other.bias, fits[0].bias)
        np.testing.assert_array_equal(other.n_iter, fits[0].n_iter)
