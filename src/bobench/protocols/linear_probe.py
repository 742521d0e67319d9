"""Linear probe: L2-regularised multinomial logistic regression on frozen, L2-normalised features.

The regularisation strength is chosen on the "val" split from a log grid (ties go to the stronger
penalty), the model is refit on train+val at that strength, and test is reported — never selected on.

The objective is exactly scikit-learn's `LogisticRegression(C=C)` (lbfgs): the sum of log-losses plus
0.5 / C * ||W||², intercept unpenalised; two classes use one logistic output (as scikit-learn does),
more classes a full softmax. The whole grid is fitted in one pass: G problems stacked into one
parameter tensor, optimised by a batched L-BFGS in which every problem keeps its own curvature
history, step size and stopping test, while each evaluation is a single matrix product over all of
them. That reads the features once per iteration instead of once per grid value.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

import numpy as np
import torch

from bobench.errors import InvalidArgument
from bobench.protocols.base import Protocol, RunContext, register_protocol
from bobench.protocols.metrics import (
    check_features,
    l2_normalize,
    mean_per_class_recall,
    positive_float,
    topk_accuracy,
)

log = logging.getLogger(__name__)

DEFAULT_GRID: tuple[float, ...] = tuple(float(c) for c in np.logspace(-6, 2, 24))
_HISTORY = 10  # L-BFGS curvature pairs kept per problem
_MAX_LINE_SEARCH = 30
_ARMIJO = 1e-4
_ROW_CHUNK = 32768  # rows per matrix product: bounds the [rows, G, K] logit buffer


@dataclass
class LogisticGridFit:
    """Fitted weights for every grid value: `weights` [G, d, K], `bias` [G, K] (float64).

    `classes` are the labels seen in training, in column order; K = 1 for two classes (the logit of
    classes[1] against classes[0]), else K = len(classes). `n_iter` and `converged` are per problem.
    """

    Cs: np.ndarray
    classes: np.ndarray
    weights: torch.Tensor
    bias: torch.Tensor
    n_iter: np.ndarray
    converged: np.ndarray

    def decision_scores(self, x: np.ndarray) -> np.ndarray:
        """Class scores [G, n, len(classes)] for features `x` (already normalised like the training data)."""
        xt = torch.from_numpy(np.ascontiguousarray(x, dtype=np.float32)).to(torch.float64)
        logits = torch.einsum("nd,gdk->gnk", xt, self.weights) + self.bias[:, None, :]
        if logits.shape[-1] == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=-1)
        return logits.numpy()

    def predict(self, x: np.ndarray) -> np.ndarray:
        """Predicted labels [G, n] (original label values)."""
        return self.classes[self.decision_scores(x).argmax(axis=-1)]


def fit_logistic_grid(
    x: np.ndarray,
    y: np.ndarray,
    Cs: np.ndarray | list[float],
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    dtype: torch.dtype = torch.float32,
) -> LogisticGridFit:
    """Fit one L2-regularised logistic regression per value of `Cs` on (`x`, `y`), all at once.

    `x` is used as given (normalise it first if wanted). Each problem stops when the max-abs gradient
    of its mean objective (objective / n, as scikit-learn scales it) is ≤ `tol` or after `max_iter`
    iterations. `dtype` is the precision of the two big matrix products; the objective, gradients and
    optimiser state are float64. Raises InvalidArgument for fewer than two classes or a bad C.
    """
    x = np.asarray(x, dtype=np.float32)
    classes, y_idx = np.unique(np.asarray(y), return_inverse=True)
    if classes.size < 2:
        raise InvalidArgument(
            f"logistic regression needs at least two classes in training, got {classes.tolist()}"
        )
    Cs = np.asarray([positive_float(c, "linear probe C") for c in Cs], dtype=np.float64)
    k_out = 1 if classes.size == 2 else int(classes.size)
    # Two exact reparametrisations. Centring: the intercept is unpenalised, so b' = b + mean·W absorbs
    # the mean and decouples intercept from weights. Rotation onto the eigenvectors U of the feature
    # covariance: ||W||² = ||UᵀW||², so the penalty is unchanged and the Hessian becomes nearly
    # diagonal (so a diagonal preconditioner fits it). With fewer samples than dimensions U spans the
    # data, where the optimum lies, so the problem also shrinks to ≤ n dimensions.
    mean = x.mean(axis=0, dtype=np.float64)
    x_centred = torch.from_numpy((x - mean).astype(np.float32))
    basis, eigval = _eigenbasis(x_centred)
    rotated = (x_centred @ basis.to(torch.float32)).to(dtype)
    y_t = torch.from_numpy(y_idx.astype(np.int64))
    problem = _Problem(rotated, y_t, k_out, Cs, eigval, basis)
    theta0 = torch.zeros(len(Cs), (rotated.shape[1] + 1) * k_out, dtype=torch.float64)
    theta, n_iter, converged = _batched_lbfgs(problem, theta0, max_iter=max_iter, tol=tol)
    stalled = ~converged & (n_iter < max_iter)
    if stalled.any() and dtype != torch.float64:
        # float32 products limit how small a gradient can be resolved: finish these in float64
        rows = torch.from_numpy(np.flatnonzero(stalled))
        exact = _Problem(rotated.to(torch.float64), y_t, k_out, Cs[stalled], eigval, basis)
        theta[rows], more_iter, converged[stalled] = _batched_lbfgs(
            exact, theta[rows], max_iter=max_iter - int(n_iter[stalled].min()), tol=tol
        )
        n_iter[stalled] += more_iter
    if not converged.all():
        log.warning(
            "logistic regression did not converge for C=%s within %d iterations",
            [float(c) for c in Cs[~converged]],
            max_iter,
        )
    r = rotated.shape[1]
    weights = torch.einsum("dr,grk->gdk", basis, theta[:, : r * k_out].reshape(len(Cs), r, k_out))
    bias = theta[:, r * k_out :] - torch.einsum("d,gdk->gk", torch.from_numpy(mean), weights)
    return LogisticGridFit(Cs, classes, weights, bias, n_iter, converged)


def _eigenbasis(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(U float64 [d, r] orthonormal, eigenvalues [r]) of the second moment XᵀX / n of centred `x`.

    n ≥ d: all d eigenvectors (a full rotation), estimated from every k-th row — Σ only steers the
    search, the rotation is exact whatever Σ is. n < d: the r ≤ n directions the rows span, from the
    n × n Gram matrix in float64 so that no direction carrying data is dropped.
    """
    n, d = x.shape
    if n >= d:
        sample = x[:: -(-n // (2 * d))]
        eigval, basis = torch.linalg.eigh(sample.T @ sample / sample.shape[0])
        return basis.to(torch.float64), eigval.to(torch.float64).clamp(min=0)
    x64 = x.to(torch.float64)
    eigval, v = torch.linalg.eigh(x64 @ x64.T / n)
    keep = eigval > 1e-12 * eigval.max().clamp(min=1e-300)
    eigval, v = eigval[keep], v[:, keep]
    return x64.T @ v / torch.sqrt(n * eigval), eigval


class _Problem:
    """Mean objective and gradient of a stack of logistic regressions sharing the same data.

    Parameters of one problem are a flattened [r + 1, K] matrix (weights, then the intercept row) in
    the rotated basis. `h0` [G, P] is the diagonal starting inverse Hessian of each problem: the
    Hessian there is about c·λᵢ + l2 for weight row i (c: softmax curvature at uniform predictions,
    1/4 for one logistic output, 1/K for K outputs; λ: covariance eigenvalues) and c for the intercept.
    """

    def __init__(
        self,
        x: torch.Tensor,
        y_idx: torch.Tensor,
        k_out: int,
        Cs: np.ndarray,
        eigval: torch.Tensor,
        basis: torch.Tensor,
    ) -> None:
        self.x, self.y_idx, self.k_out, self.basis = x, y_idx, k_out, basis
        self.n, self.d = x.shape
        self.l2 = torch.from_numpy(1.0 / (Cs * self.n))  # penalty weight of the mean objective
        c = 0.25 if k_out == 1 else 1.0 / k_out
        rows = torch.cat([c * eigval[None, :] + self.l2[:, None], torch.full((len(Cs), 1), c)], dim=1)
        self.h0 = (1.0 / rows).repeat_interleave(k_out, dim=1)

    def converged(self, grad: torch.Tensor, which: torch.Tensor, tol: float) -> torch.Tensor:
        """max |gradient| ≤ tol per problem, measured in the original feature basis (scikit-learn's test).

        ‖g‖∞ ≤ ‖g‖₂ (rotation-invariant) ≤ √d·‖g‖∞, so only rows between the bounds need rotating back.
        """
        norm = grad.norm(dim=1)
        done = norm <= tol
        unsure = (~done & (norm <= tol * np.sqrt(self.basis.shape[0] + 1))).nonzero().squeeze(1)
        if unsure.numel():
            k = self.k_out
            w = grad[unsure, : self.d * k].reshape(len(unsure), self.d, k)
            w_orig = torch.einsum("dr,ark->adk", self.basis, w).abs().amax(dim=(1, 2))
            done[unsure] = torch.maximum(w_orig, grad[unsure, self.d * k :].abs().amax(dim=1)) <= tol
        return done

    def objective(self, theta: torch.Tensor, which: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(f [A], grad [A, P]) for the problems `which` at parameters `theta` [A, P]."""
        a, d, k = theta.shape[0], self.d, self.k_out
        w = theta[:, : d * k].reshape(a, d, k)
        b = theta[:, d * k :]
        w_cols = w.permute(1, 0, 2).reshape(d, a * k).to(self.x.dtype)
        loss = torch.zeros(a, dtype=torch.float64)
        grad_w = torch.zeros(d, a * k, dtype=torch.float64)
        grad_b = torch.zeros(a, k, dtype=torch.float64)
        for start in range(0, self.n, _ROW_CHUNK):
            xc = self.x[start : start + _ROW_CHUNK]
            yc = self.y_idx[start : start + _ROW_CHUNK]
            logits = (xc @ w_cols).to(torch.float64).reshape(-1, a, k) + b
            if k == 1:
                logits = torch.cat([torch.zeros_like(logits), logits], dim=-1)
            log_p = torch.log_softmax(logits, dim=-1)
            picked = log_p.gather(2, yc[:, None, None].expand(-1, a, 1)).squeeze(2)
            loss -= picked.sum(0)
            resid = log_p.exp()
            resid.scatter_add_(
                2, yc[:, None, None].expand(-1, a, 1), -torch.ones(len(yc), a, 1, dtype=torch.float64)
            )
            if k == 1:
                resid = resid[..., 1:]
            grad_w += (xc.T @ resid.reshape(-1, a * k).to(self.x.dtype)).to(torch.float64)
            grad_b += resid.sum(0)
        l2 = self.l2[which]
        grad_w = grad_w.reshape(d, a, k).permute(1, 0, 2) / self.n + l2[:, None, None] * w
        f = loss / self.n + 0.5 * l2 * (w * w).sum((1, 2))
        return f, torch.cat([grad_w.reshape(a, -1), grad_b / self.n], dim=1)


@dataclass
class _LbfgsState:
    """Optimiser state of the problems still running (rows), compacted as problems finish."""

    which: torch.Tensor  # [A] problem indices
    theta: torch.Tensor  # [A, P]
    f: torch.Tensor  # [A]
    grad: torch.Tensor  # [A, P]
    s_hist: torch.Tensor  # [m, A, P] steps, ring buffer
    y_hist: torch.Tensor  # [m, A, P] gradient changes
    rho: torch.Tensor  # [m, A] 1 / sᵀy; 0 marks an empty or rejected pair
    gamma: torch.Tensor  # [A] scale of the starting matrix
    h0: torch.Tensor  # [A, P] diagonal starting inverse Hessian

    def keep(self, rows: torch.Tensor) -> _LbfgsState:
        return _LbfgsState(
            self.which[rows], self.theta[rows], self.f[rows], self.grad[rows],
            self.s_hist[:, rows], self.y_hist[:, rows], self.rho[:, rows], self.gamma[rows], self.h0[rows],
        )  # fmt: skip


def _batched_lbfgs(
    problem: _Problem, theta: torch.Tensor, *, max_iter: int, tol: float
) -> tuple[torch.Tensor, np.ndarray, np.ndarray]:
    """Minimise G independent objectives with diagonally preconditioned L-BFGS + Armijo backtracking.

    Each problem has its own history, scaling, step and stopping test; finished problems leave the
    batch, so later iterations only pay for the slow ones. Returns (theta, iterations [G], converged [G]).
    """
    g_count, p = theta.shape
    everyone = torch.arange(g_count)
    f, grad = problem.objective(theta, everyone)
    n_iter = torch.zeros(g_count, dtype=torch.int64)
    converged = problem.converged(grad, everyone, tol)
    empty = torch.zeros(_HISTORY, g_count, p, dtype=torch.float64)
    state = _LbfgsState(
        everyone, theta.clone(), f, grad, empty, empty.clone(),
        torch.zeros(_HISTORY, g_count, dtype=torch.float64), torch.ones(g_count, dtype=torch.float64), problem.h0,
    ).keep(~converged)  # fmt: skip
    result = theta.clone()
    for iteration in range(max_iter):
        if state.which.numel() == 0:
            break
        slot = iteration % _HISTORY
        direction = -_two_loop(state, slot, min(iteration, _HISTORY))
        slope = torch.einsum("ap,ap->a", state.grad, direction)
        uphill = slope >= 0  # a stale history can point uphill: fall back to the preconditioned gradient
        if uphill.any():
            direction[uphill] = -state.gamma[uphill, None] * state.h0[uphill] * state.grad[uphill]
            slope = torch.einsum("ap,ap->a", state.grad, direction)
        new_theta, new_f, new_grad, found = _armijo(problem, state, direction, slope)
        step, change = new_theta - state.theta, new_grad - state.grad
        sy = torch.einsum("ap,ap->a", step, change)
        y_h_y = torch.einsum("ap,ap->a", change * state.h0, change)
        ok = found & (sy > 1e-10 * torch.einsum("ap,ap->a", change, change)) & (y_h_y > 0)
        state.s_hist[slot], state.y_hist[slot] = step, change
        state.rho[slot] = torch.where(ok, 1.0 / sy.where(ok, torch.ones_like(sy)), 0.0)
        state.gamma = torch.where(ok, sy / y_h_y.where(ok, torch.ones_like(y_h_y)), state.gamma)
        state.theta, state.f, state.grad = new_theta, new_f, new_grad
        n_iter[state.which] += 1
        done = problem.converged(new_grad, state.which, tol)
        converged[state.which] = done
        finished = done | ~found  # a failed line search means no further progress is possible
        if finished.any():
            result[state.which[finished]] = state.theta[finished]
            state = state.keep(~finished)
    result[state.which] = state.theta
    return result, n_iter.numpy(), converged.numpy()


def _two_loop(state: _LbfgsState, slot: int, n_pairs: int) -> torch.Tensor:
    """The L-BFGS inverse-Hessian product H·grad for every problem (rows), newest pair first."""
    q = state.grad.clone()
    order = [(slot - 1 - j) % _HISTORY for j in range(n_pairs)]
    alphas = []
    for j in order:
        alpha = state.rho[j] * torch.einsum("ap,ap->a", state.s_hist[j], q)
        q -= alpha[:, None] * state.y_hist[j]
        alphas.append(alpha)
    r = state.gamma[:, None] * state.h0 * q
    for j, alpha in zip(reversed(order), reversed(alphas), strict=True):
        beta = state.rho[j] * torch.einsum("ap,ap->a", state.y_hist[j], r)
        r += (alpha - beta)[:, None] * state.s_hist[j]
    return r


def _armijo(
    problem: _Problem, state: _LbfgsState, direction: torch.Tensor, slope: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """Backtracking from step 1, halving per problem until sufficient decrease.

    Returns (theta, f, grad, found); where no acceptable step was found, the current point is kept.
    """
    new_theta, new_f, new_grad = state.theta.clone(), state.f.clone(), state.grad.clone()
    step = torch.ones_like(state.f)
    pending = torch.ones_like(state.f, dtype=torch.bool)
    for _ in range(_MAX_LINE_SEARCH):
        rows = pending.nonzero().squeeze(1)
        trial = state.theta[rows] + step[rows, None] * direction[rows]
        trial_f, trial_grad = problem.objective(trial, state.which[rows])
        ok = trial_f <= state.f[rows] + _ARMIJO * step[rows] * slope[rows]
        accepted = rows[ok]
        new_theta[accepted], new_f[accepted], new_grad[accepted] = trial[ok], trial_f[ok], trial_grad[ok]
        pending[accepted] = False
        step[rows[~ok]] *= 0.5
        if not pending.any():
            break
    return new_theta, new_f, new_grad, ~pending


def select_C(Cs: np.ndarray, val_accuracy: np.ndarray, val_loss: np.ndarray | None = None) -> int:
    """Index of the best validation accuracy. Ties (common when val accuracy saturates) go to the lowest
    validation log-loss when given, then to the smallest C (the strongest penalty)."""
    Cs = np.asarray(Cs, dtype=np.float64)
    acc = np.asarray(val_accuracy, dtype=np.float64)
    best = np.flatnonzero(acc == acc.max())
    if val_loss is not None and best.size > 1:
        loss = np.asarray(val_loss, dtype=np.float64)[best]
        best = best[np.isclose(loss, loss.min(), rtol=1e-9, atol=1e-12)]
    return int(best[np.argmin(Cs[best])])


def validation_log_loss(fit: LogisticGridFit, x: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Mean cross-entropy [G] of each grid model on (x, y); labels unseen in training count as inf."""
    scores = torch.from_numpy(fit.decision_scores(x))
    log_p = torch.log_softmax(scores, dim=-1).numpy()
    y = np.asarray(y)
    idx = np.searchsorted(fit.classes, y)
    known = (idx < len(fit.classes)) & (fit.classes[np.minimum(idx, len(fit.classes) - 1)] == y)
    if not known.all():
        return np.full(log_p.shape[0], np.inf)
    return -log_p[:, np.arange(y.size), idx].mean(axis=1)


def sweep_and_select(
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_val: np.ndarray,
    y_val: np.ndarray,
    Cs: np.ndarray | list[float],
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
) -> tuple[LogisticGridFit, np.ndarray, int]:
    """Fit the grid on train, score it on val. Returns (fit, val_accuracy [G], chosen index)."""
    fit = fit_logistic_grid(x_train, y_train, Cs, max_iter=max_iter, tol=tol)
    val_accuracy = (fit.predict(x_val) == np.asarray(y_val)[None, :]).mean(axis=1)
    return fit, val_accuracy, select_C(fit.Cs, val_accuracy, validation_log_loss(fit, x_val, y_val))


def classification_metrics(
    fit: LogisticGridFit, g: int, x: np.ndarray, y: np.ndarray
) -> dict[str, float | None]:
    """top1, top5 (None with fewer than 5 classes) and mean per-class recall of grid entry `g` on (x, y)."""
    scores = fit.decision_scores(x)[g]
    column = {int(c): i for i, c in enumerate(fit.classes)}
    y_col = np.array([column.get(int(label), -1) for label in y])  # -1: a class never seen in training
    return {
        "top1": topk_accuracy(scores, y_col, 1),
        "top5": topk_accuracy(scores, y_col, 5),
        "mean_per_class_recall": mean_per_class_recall(y, fit.classes[scores.argmax(axis=1)]),
    }


def resolve_grid(config: dict[str, Any], where: str) -> np.ndarray:
    """The C grid of a protocol config (`grid`: list of C, or None for DEFAULT_GRID)."""
    grid = config.get("grid")
    if grid is None:
        return np.asarray(DEFAULT_GRID)
    if not isinstance(grid, list | tuple) or not grid:
        raise InvalidArgument(f"{where}: 'grid' must be a non-empty list of C values or null, got {grid!r}")
    return np.asarray([positive_float(c, f"{where}: grid value") for c in grid])


def solver_options(config: dict[str, Any], where: str) -> dict[str, Any]:
    """max_iter and tol from a protocol config, validated."""
    max_iter = config.get("max_iter")
    if isinstance(max_iter, bool) or not isinstance(max_iter, int) or max_iter <= 0:
        raise InvalidArgument(f"{where}: 'max_iter' must be a positive integer, got {max_iter!r}")
    return {"max_iter": max_iter, "tol": positive_float(config.get("tol"), f"{where}: 'tol'")}


def evaluate(ctx: RunContext, config: dict[str, Any], seed: int) -> dict[str, Any]:
    """Select C on val, refit on train+val, report test. The fit is deterministic; `seed` is unused."""
    config = PROTOCOL.resolve_config(config)
    grid, options = resolve_grid(config, "linear_probe"), solver_options(config, "linear_probe")
    splits = {}
    for name in ("train", "val", "test"):
        x, y = check_features(*ctx.features(name), f"linear_probe: split {name!r}")
        splits[name] = (l2_normalize(x), y)
    (x_tr, y_tr), (x_va, y_va), (x_te, y_te) = splits["train"], splits["val"], splits["test"]
    ctx.progress(0, 2, f"linear probe: fitting {len(grid)} C values")
    sweep, val_accuracy, chosen = sweep_and_select(x_tr, y_tr, x_va, y_va, grid, **options)
    chosen_C = float(grid[chosen])
    if chosen_C in (grid.min(), grid.max()):
        log.warning(
            "linear_probe: chosen C=%.3g is at the edge of the grid; the optimum may lie beyond it", chosen_C
        )
    ctx.progress(1, 2, f"linear probe: refit at C={chosen_C:.3g}")
    final = fit_logistic_grid(
        np.concatenate([x_tr, x_va]), np.concatenate([y_tr, y_va]), [chosen_C], **options
    )
    metrics: dict[str, Any] = classification_metrics(final, 0, x_te, y_te)
    ctx.progress(2, 2, "linear probe: done")
    metrics.update(
        val_top1=float(val_accuracy[chosen]),
        chosen_C=chosen_C,
        n_train=int(len(y_tr)),
        n_val=int(len(y_va)),
        n_test=int(len(y_te)),
        converged=bool(final.converged[0] and sweep.converged[chosen]),
        n_iter=int(final.n_iter[0]),
    )
    return metrics


PROTOCOL = register_protocol(
    Protocol(
        name="linear_probe",
        version="1",
        task="classification",
        evaluate=evaluate,
        defaults={"grid": None, "max_iter": 1000, "tol": 1e-4},
        primary_metric="top1",
        higher_is_better={"top1": True, "top5": True, "mean_per_class_recall": True, "val_top1": True},
        description="L2-regularised logistic regression on frozen L2-normalised features; C chosen on val.",
    )
)
