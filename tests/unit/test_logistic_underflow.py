"""The intercept Newton step survives classes whose probabilities underflow to 0 on every sample.

Seen on the emoji demo (55 classes): `torch.linalg.solve` raised "input matrix is singular" in
`_Problem._optimal_bias`, failing every linear probe, few-shot and OOD run on that set.
"""

from __future__ import annotations

import numpy as np
import torch

from bobench.protocols.logistic import _Problem


def test_intercept_newton_step_with_two_unreachable_classes_is_solved_and_lowers_the_loss():
    n, k = 12, 5
    y = torch.arange(n) % k
    problem = _Problem(
        torch.randn(n, 3, generator=torch.Generator().manual_seed(0)), y, k, np.array([1.0]), 1e-4
    )
    scores = torch.zeros(1, k, n)
    scores[:, 3:] = -1e3  # classes 3 and 4: exp underflows to exactly 0 for every sample
    start = torch.zeros(1, k, dtype=torch.float64)
    _, start_log_p = problem._probabilities(scores, start)
    bias, prob, log_p = problem._optimal_bias(scores, start.clone())
    assert torch.isfinite(bias).all() and torch.isfinite(log_p).all()
    assert log_p.item() > start_log_p.item()  # the step was taken and helped
    assert (bias[0, 3:] > bias[0, :3].max()).all()  # the unreachable classes are pulled up
