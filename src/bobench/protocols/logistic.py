"""A grid of L2-regularised logistic regressions, fitted in one batched, vectorised pass.

The objective is exactly scikit-learn's `LogisticRegression(C=C)` (lbfgs): the mean log-loss plus
0.5 / (C·n) · ||W||², intercept unpenalised; two classes use one logistic output (as scikit-learn does),
more classes a full softmax. Every problem stops by scikit-learn's rule: the max-abs gradient of the
mean objective, in the original (uncentred) parametrisation, is ≤ tol.

All G problems are stacked into one parameter tensor and optimised by a batched L-BFGS in which every
problem keeps its own curvature history, step size and stopping test, while each evaluation is two
matrix products over all of them: the features are read once per iteration, not once per grid value.
What makes it fast:

- The intercept is profiled out: at every evaluation it is set to its exact optimum for the current
  weights by a few Newton steps on the logits already computed (K unknowns per problem, no pass over
  the features), and L-BFGS runs on the weights of F(W) = min_b f(W, b), whose gradient is ∂f/∂W at
  that intercept. The slow, weakly coupled intercept direction, which otherwise dominates the
  iteration count of weakly regularised problems, disappears.
- A curvature-aware starting matrix for L-BFGS: the top eigen-directions U of the (centred) feature
  covariance, from a row sample, plus a per-feature diagonal for the rest, each scaled by the
  softmax curvature p(1 - p) of the current model, which the objective returns with the gradient for
  a small extra product.
- Fewer rows than features (few-shot draws, small probes): the problem is solved in the coordinates of
  the rows' span (`_row_space_coordinates`), n instead of d unknowns per class, the same optimum and
  stopping test; on the demo's probes this and the intercept trust region below halved the fit time.
- The intercept Newton steps are accurate and bounded: the Hessian's diagonal is summed as Σ p(1 - p)
  (not Σ p - Σ p², which float32 rounding makes meaningless on saturated rows), a step moves an
  intercept by at most `_MAX_BIAS_STEP` logits, and a problem no step improves stops trying (its
  evaluation keeps the best intercept found; the stopping test still demands the intercept gradient
  ≤ tol). Line-search trials far out used to spend hundreds of softmax passes on one evaluation.
- Logits are laid out [problems × classes, rows] so that the products stay efficient when only one or
  two problems are left in the batch; finished problems leave the batch.
- A problem with fewer than `SINGLE_THREAD_ROWS` training rows (every probe of the demo) is solved
  on one torch thread: its per-iteration products and reductions are too small to split, so every
  op of a multi-threaded solve is mostly a thread barrier, which collapses as soon as another process
  wants the cores (probe fits of the demo at load 4-5 on 2 cores: 3.3-5x faster on one thread than
  on two; they were 53 % of a cold demo's wall under that load). One thread also makes the fit of a
  small probe independent of the machine's core count (the order of float32 reductions). Larger
  problems keep torch's thread setting (the process's thread budget). The change is scoped to the
  fit's own thread and restored after it (`bobench.threads.torch_threads`: serialised, and every
  run re-asserts the budget when it starts), so an evaluator running several runs at once never
  leaves another run on one thread.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, fields

import numpy as np
import torch

from bobench.errors import InvalidArgument
from bobench.protocols.metrics import positive_float
from bobench.stage_timer import timed
from bobench.threads import torch_threads

log = logging.getLogger(__name__)

_HISTORY = 10  # L-BFGS curvature pairs kept per problem
_MAX_LINE_SEARCH = 30
_ARMIJO = 1e-4
_RANK = 64  # eigen-directions of the covariance treated exactly by the preconditioner
_SAMPLE_ROWS = 512  # rows used to estimate them: they only steer the search, never the optimum
_MIN_CURVATURE = 1e-10
_GAP_PER_TOL = 0.1
_MAX_NEWTON = 20  # intercept Newton steps per evaluation (usually 1-3)
_MAX_BIAS_STEP = 8.0  # largest intercept change (in logits) one Newton step may make: a trust region
_MAX_BIAS_HALVINGS = 30
_BIAS_DAMPING = 1e-9  # Levenberg damping of the intercept Hessian (see _Problem._optimal_bias)
_NEWTON_TOL_PER_TOL = 0.1  # the intercept gradient Newton leaves, relative to tol
_WARM_BLOCK = 8  # grid values solved together per step along the regularisation path
_ROW_SPACE_SHARE = 0.8  # at most this many rows per feature: solve in the rows' span (_row_space_coordinates)
SINGLE_THREAD_ROWS = 2048  # fewer training rows: solved on one torch thread (module docstring)


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


@timed("probe_fit")
def fit_logistic_grid(
    x: np.ndarray,
    y: np.ndarray,
    Cs: np.ndarray | list[float],
    *,
    max_iter: int = 1000,
    tol: float = 1e-4,
    dtype: torch.dtype = torch.float32,
    warm_start: bool = True,
) -> LogisticGridFit:
    """Fit one L2-regularised logistic regression per value of `Cs` on (`x`, `y`), all at once.

    `x` is used as given (normalise it first if wanted). Each problem stops when the max-abs gradient
    of its mean objective (objective / n, as scikit-learn scales it) over weights and intercept is
    ≤ `tol` or after `max_iter` iterations. `dtype` is the precision of the products over the data;
    losses and gradients are summed, and optimiser state kept, in float64. Problems whose line search
    stalls before `tol` (float32 limits how small a gradient can be resolved) are finished in float64.
    With `warm_start` the grid is solved along the regularisation path: in blocks of `_WARM_BLOCK`
    values in order of decreasing penalty, each block started from the secant (in log C) through the
    two weakest-penalty solutions found so far, so the weak-penalty problems, which take the most
    iterations, start close to their optimum (about half the iterations on the bench's features). The
    objective, optimum and stopping rule are those of a cold start from W = 0.
    Raises InvalidArgument for fewer than two classes or a bad C. Fewer than `SINGLE_THREAD_ROWS`
    rows are solved on one torch thread (module docstring).
    """
    with torch_threads(1 if len(x) < SINGLE_THREAD_ROWS else None):
        return _fit_logistic_grid(x, y, Cs, max_iter=max_iter, tol=tol, dtype=dtype, warm_start=warm_start)


def _fit_logistic_grid(
    x: np.ndarray,
    y: np.ndarray,
    Cs: np.ndarray | list[float],
    *,
    max_iter: int,
    tol: float,
    dtype: torch.dtype,
    warm_start: bool,
) -> LogisticGridFit:
    x = np.asarray(x, dtype=np.float32)
    classes, y_idx = np.unique(np.asarray(y), return_inverse=True)
    if classes.size < 2:
        raise InvalidArgument(
            f"logistic regression needs at least two classes in training, got {classes.tolist()}"
        )
    Cs = np.asarray([positive_float(c, "linear probe C") for c in Cs], dtype=np.float64)
    y_t = torch.from_numpy(y_idx.reshape(-1).astype(np.int64))
    features, lift = _row_space_coordinates(torch.from_numpy(x))
    problem = _Problem(features.to(dtype), y_t, classes.size, Cs, tol, lift)
    weights = torch.zeros(len(Cs), problem.d, problem.k_out, dtype=torch.float64)
    bias = _log_prior_intercept(y_t, classes.size).expand(len(Cs), -1).clone()
    n_iter = np.zeros(len(Cs), dtype=np.int64)
    converged = np.zeros(len(Cs), dtype=bool)
    solved = torch.zeros(0, dtype=torch.int64)
    for block in _path_blocks(Cs, _WARM_BLOCK if warm_start else len(Cs)):
        if solved.numel():
            weights[block] = _predicted_start(weights, np.log(Cs), solved, block)
            bias[block] = bias[solved[-1]].clone()  # only where Newton on the intercept starts
        _batched_lbfgs(problem, weights, bias, block, n_iter, converged, max_iter=max_iter)
        solved = torch.cat([solved, block])
    stalled = torch.from_numpy(np.flatnonzero(~converged & (n_iter < max_iter)))
    if stalled.numel() and dtype != torch.float64:
        exact = _Problem(features.to(torch.float64), y_t, classes.size, Cs, tol, lift)
        used = n_iter[stalled.numpy()].copy()
        _batched_lbfgs(exact, weights, bias, stalled, n_iter, converged, max_iter=max_iter - int(used.min()))
        n_iter[stalled.numpy()] += used
    if not converged.all():
        log.warning(
            "logistic regression did not converge for C=%s within %d iterations",
            [float(c) for c in Cs[~converged]],
            max_iter,
        )
    if lift is not None:
        weights = torch.einsum("dr,grk->gdk", lift, weights)
    return LogisticGridFit(Cs, classes, weights, bias, n_iter, converged)


def _row_space_coordinates(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(features, lift): the problem in the coordinates of the training rows' span when that is
    narrower than the feature space, else (x, None).

    Every gradient of the objective over W is xᵀ·(residuals) + penalty·W, so from W = 0, or from any
    start inside the row space of x (the warm-start secants combine earlier solutions), the iterates and
    the optimum stay inside it. With x = (Q R)ᵀ (QR of xᵀ, Q [d, r] orthonormal, r = n), W = Q W̃ gives
    x W = Rᵀ W̃ and ||W|| = ||W̃||: the same objective over r instead of d unknowns per class, and
    every product, preconditioner and L-BFGS history is r / d the size. The stopping test stays
    scikit-learn's, on the full gradient Q g̃ (`_Problem.converged`). Few-shot and small linear probes
    (n of 10-600 rows against 512-2048 features) are the problems this shrinks.
    """
    n, d = x.shape
    if n > _ROW_SPACE_SHARE * d:
        return x, None
    q, r = torch.linalg.qr(x.to(torch.float64).T, mode="reduced")  # x = rᵀ qᵀ
    return r.T.contiguous(), q


def _predicted_start(
    weights: torch.Tensor, log_c: np.ndarray, solved: torch.Tensor, block: torch.Tensor
) -> torch.Tensor:
    """Starting weights for `block` from the solutions `solved` (in path order): the secant through the
    last two solutions, in log C, extended to each new C (only a start: the optimum is unchanged)."""
    last, i = weights[solved[-1]], int(solved[-1])
    if solved.numel() < 2 or log_c[i] - log_c[int(solved[-2])] < 1e-12:  # no secant (or a repeated C)
        return last.expand(block.numel(), -1, -1).clone()
    t = torch.from_numpy((log_c[block.numpy()] - log_c[i]) / (log_c[i] - log_c[int(solved[-2])]))
    return last + t[:, None, None] * (last - weights[solved[-2]])


def _path_blocks(Cs: np.ndarray, size: int) -> list[torch.Tensor]:
    """Indices of `Cs` in increasing C (decreasing penalty), cut into consecutive blocks of `size`."""
    order = torch.from_numpy(np.argsort(Cs, kind="stable"))
    return list(torch.split(order, max(1, size)))


def _log_prior_intercept(y_idx: torch.Tensor, n_classes: int) -> torch.Tensor:
    """The intercept that is optimal when W = 0: log class frequencies (centred), or the log-odds."""
    log_prior = torch.log(torch.bincount(y_idx, minlength=n_classes).to(torch.float64) / len(y_idx))
    return (log_prior[1:] - log_prior[0]) if n_classes == 2 else log_prior - log_prior.mean()


@dataclass
class _Evaluation:
    """The objective at weights W with the intercept b set to its optimum for W (rows: problems)."""

    f: torch.Tensor  # [A] mean objective
    grad: torch.Tensor  # [A, d, K] gradient over W (= dF/dW, as b is optimal)
    bias: torch.Tensor  # [A, K] the optimal intercept
    grad_bias: torch.Tensor  # [A, K] its remaining gradient (Newton leaves it far below tol)
    curvature: torch.Tensor  # [A, K, rank+1] softmax curvature summary, for the preconditioner

    def take(self, rows: torch.Tensor) -> _Evaluation:
        return _Evaluation(*(getattr(self, f.name)[rows] for f in fields(self)))

    def put(self, rows: torch.Tensor, other: _Evaluation) -> None:
        for f in fields(self):
            getattr(self, f.name)[rows] = getattr(other, f.name)


class _Problem:
    """Objective, gradient and curvature summary of G logistic regressions sharing the data."""

    def __init__(
        self,
        x: torch.Tensor,
        y_idx: torch.Tensor,
        n_classes: int,
        Cs: np.ndarray,
        tol: float,
        lift: torch.Tensor | None = None,
    ) -> None:
        self.x, self.y_idx, self.tol, self.lift = x, y_idx, tol, lift
        self.n, self.d = x.shape
        self.k_out = 1 if n_classes == 2 else n_classes
        self.l2 = torch.from_numpy(1.0 / (Cs * self.n))  # penalty weight of the mean objective
        self.counts = torch.bincount(y_idx, minlength=n_classes).to(torch.float64)[-self.k_out :]
        self.targets = torch.nn.functional.one_hot(y_idx, n_classes).T.to(x.dtype)[-self.k_out :]  # [K, n]
        self.basis, self.curvature_features, self.tail_variance = _spectral_summary(x)
        self.rank = self.basis.shape[1]

    def evaluate(self, w: torch.Tensor, bias: torch.Tensor, which: torch.Tensor) -> _Evaluation:
        """The objective of the problems `which` at weights `w` [A, d, K], intercept re-optimised from `bias`."""
        a, k, dt = w.shape[0], self.k_out, self.x.dtype
        scores = (w.to(dt).permute(0, 2, 1).reshape(a * k, self.d) @ self.x.T).reshape(a, k, self.n)
        bias, prob, log_p_true = self._optimal_bias(scores, bias.clone())
        resid = prob - self.targets
        curvature = (prob * (1 - prob)).reshape(a * k, self.n) @ self.curvature_features
        l2 = self.l2[which]
        w_grad = (resid.reshape(a * k, self.n) @ self.x).reshape(a, k, self.d).permute(0, 2, 1)
        grad = w_grad.to(torch.float64) / self.n + l2[:, None, None] * w
        f = -log_p_true / self.n + 0.5 * l2 * (w * w).sum(dim=(1, 2))
        grad_bias = resid.sum(dim=2, dtype=torch.float64) / self.n
        return _Evaluation(f, grad, bias, grad_bias, (curvature / self.n).reshape(a, k, -1).to(torch.float32))

    def _probabilities(self, scores: torch.Tensor, bias: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(output probabilities [A, K, n], summed log-probability of the true class [A] in float64)."""
        logits = scores + bias.to(scores.dtype)[:, :, None]
        if self.k_out == 1:
            logits = torch.cat([torch.zeros_like(logits), logits], dim=1)
        log_p = torch.log_softmax(logits, dim=1)
        picked = log_p.gather(1, self.y_idx[None, None, :].expand(len(log_p), 1, -1))
        return log_p[:, -self.k_out :].exp(), picked.sum(dim=(1, 2), dtype=torch.float64)

    def _optimal_bias(
        self, scores: torch.Tensor, bias: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """Newton on the intercept alone (the logits are fixed), to max |gradient| ≤ tol / 10.

        The intercept objective is convex with a K × K Hessian, singular along the all-ones direction
        for a softmax (shifting every logit changes nothing); that direction is pinned by adding 11ᵀ/K.
        A step that raises the loss is halved. Classes whose probabilities underflow to 0 on every sample
        leave the Hessian singular even so; a tiny damping (`_BIAS_DAMPING`) keeps it solvable without
        moving the optimum (Newton still stops on the gradient). Returns (bias, probabilities, log-probability sum).
        """
        prob, log_p_true = self._probabilities(scores, bias)
        pin = (
            torch.full((self.k_out, self.k_out), 1.0 / self.k_out, dtype=torch.float64)
            if self.k_out > 1
            else 0.0
        )
        eye = torch.eye(self.k_out, dtype=torch.float64)
        stuck = torch.zeros(len(bias), dtype=torch.bool)
        for _ in range(_MAX_NEWTON):
            grad = (prob.sum(dim=2, dtype=torch.float64) - self.counts) / self.n
            todo = ((grad.abs().amax(dim=1) > self.tol * _NEWTON_TOL_PER_TOL) & ~stuck).nonzero().squeeze(1)
            if todo.numel() == 0:
                break
            step = -torch.linalg.solve(self._bias_hessian(prob[todo]) + pin + _BIAS_DAMPING * eye, grad[todo])
            step *= (_MAX_BIAS_STEP / step.abs().amax(dim=1, keepdim=True)).clamp(max=1.0)
            for _ in range(_MAX_BIAS_HALVINGS):
                trial_prob, trial_log_p = self._probabilities(scores[todo], bias[todo] + step)
                worse = trial_log_p < log_p_true[todo] - 1e-6 * log_p_true[todo].abs()
                if not worse.any():
                    break
                step[worse] *= 0.5
            better = ~worse
            stuck[todo[worse]] = True  # no step helps: the float32 logits cannot resolve a better one
            todo = todo[better]
            bias[todo] += step[better]
            prob[todo], log_p_true[todo] = trial_prob[better], trial_log_p[better]
        return bias, prob, log_p_true

    def _bias_hessian(self, p: torch.Tensor) -> torch.Tensor:
        """The intercept Hessian of the mean objective [A, K, K] at probabilities `p` [A, K, n]: off the
        diagonal -Σ p_k p_l, on it Σ p_k (1 - p_k), summed per element so that saturated rows (p near 0
        or 1) add their tiny curvature instead of the rounding error of Σ p - Σ p² in float32."""
        hessian = -(p @ p.transpose(1, 2)).to(torch.float64)
        hessian.diagonal(dim1=1, dim2=2).copy_((p * (1 - p)).sum(dim=2, dtype=torch.float64))
        return hessian / self.n

    def converged(self, ev: _Evaluation, decrement: torch.Tensor) -> torch.Tensor:
        """scikit-learn's test per problem, max |gradient| over weights and intercept ≤ tol, and the
        estimated distance to the optimum, decrement = ½ gᵀHg (H: the L-BFGS inverse Hessian), ≤ gap.

        The second test only ever asks for more work: in the flat directions of a weakly regularised
        problem the gradient can be small long before the objective is close to its minimum.
        """
        done = (ev.grad_bias.abs().amax(dim=1) <= self.tol) & (decrement <= _GAP_PER_TOL * self.tol)
        if self.lift is None:
            return done & (ev.grad.abs().amax(dim=(1, 2)) <= self.tol)
        # In row-space coordinates the full gradient is lift·g̃, and max|lift·g̃| ≤ ||g̃||₂ (orthonormal
        # columns) ≤ √(dK)·max|lift·g̃|: the norm settles most problems, the product only the rest.
        norm = ev.grad.flatten(1).norm(dim=1)
        undecided = done & (norm > self.tol) & (norm <= self.tol * (self.lift.shape[0] * self.k_out) ** 0.5)
        done &= norm <= self.tol * (self.lift.shape[0] * self.k_out) ** 0.5
        if undecided.any():
            full = torch.einsum("dr,ark->adk", self.lift, ev.grad[undecided])
            done[undecided] = full.abs().amax(dim=(1, 2)) <= self.tol
        return done

    def precondition(self, q: torch.Tensor, which: torch.Tensor, curvature: torch.Tensor) -> torch.Tensor:
        """H0·q [A, d, K]: the inverse of a model Hessian at the point where `curvature` was measured.

        Model: along basis direction i and class k, curvature[i] + l2; outside the basis, per feature j,
        tail_variance[j] × (curvature outside / mean energy outside) + l2, kept symmetric by projecting
        onto the complement on both sides.
        """
        basis, l2 = self.basis, self.l2[which].to(torch.float32)[:, None, None]
        q32 = q.to(torch.float32)
        curv = curvature.clamp(min=_MIN_CURVATURE).permute(0, 2, 1)  # [A, rank+1, K]
        inside = torch.einsum("dr,adk->ark", basis, q32)
        outside = q32 - torch.einsum("dr,ark->adk", basis, inside)
        tail = outside / (self.tail_variance[None, :, None] * curv[:, -1:] + l2)
        tail -= torch.einsum("dr,ark->adk", basis, torch.einsum("dr,adk->ark", basis, tail))
        out = torch.einsum("dr,ark->adk", basis, inside / (curv[:, :-1] + l2)) + tail
        return out.to(torch.float64)


def _spectral_summary(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(basis U [d, r], per-row features [n, r+1], tail variance [d]) for the preconditioner.

    U: the top r eigenvectors of the centred covariance of a row sample (the directions only steer
    the search, never the optimum). Per row: squared projections on U and the energy outside U scaled
    to unit mean. Tail variance: each feature's variance left outside U.
    """
    n, d = x.shape
    x32 = x.to(torch.float32)
    mean = x32.mean(dim=0)
    sample = x32[:: max(1, n // _SAMPLE_ROWS)][:_SAMPLE_ROWS] - mean
    if sample.shape[0] < d:
        eigval, v = torch.linalg.eigh(sample @ sample.T)
        keep = torch.flip(torch.nonzero(eigval > 1e-6 * eigval[-1].clamp(min=1e-30)).squeeze(1), (0,))[:_RANK]
        basis = sample.T @ (v[:, keep] / eigval[keep].sqrt())
    else:
        basis = torch.linalg.eigh(sample.T @ sample)[1][:, -_RANK:].flip(1)
    projected = x32 @ basis - mean @ basis  # [n, r]
    squares = x32.square()
    energy = squares.sum(dim=1) - 2 * (x32 @ mean) + mean.square().sum() - projected.square().sum(dim=1)
    energy = energy.clamp(min=0)
    mean_energy = energy.mean().clamp(min=1e-30)
    variance = (
        squares.mean(dim=0) - mean.square() - (basis.square() * projected.square().mean(dim=0)).sum(dim=1)
    )
    tail_variance = variance.clamp(min=1e-3 * float(mean_energy) / d + 1e-30)
    per_row = torch.cat([projected.square(), (energy / mean_energy)[:, None]], dim=1)
    return basis, per_row.to(x.dtype), tail_variance


@dataclass
class _LbfgsState:
    """Optimiser state of the problems still running (rows), compacted as problems finish."""

    which: torch.Tensor  # [A] problem indices
    w: torch.Tensor  # [A, d, K]
    ev: _Evaluation  # objective, gradient, optimal intercept and curvature at w
    s_hist: torch.Tensor  # [m, A, d, K] steps, ring buffer
    y_hist: torch.Tensor  # [m, A, d, K] gradient changes
    rho: torch.Tensor  # [m, A] 1 / sᵀy; 0 marks an empty or rejected pair
    gamma: torch.Tensor  # [A] scale of the starting matrix

    def keep(self, rows: torch.Tensor) -> _LbfgsState:
        return _LbfgsState(
            self.which[rows], self.w[rows], self.ev.take(rows),
            self.s_hist[:, rows], self.y_hist[:, rows], self.rho[:, rows], self.gamma[rows],
        )  # fmt: skip


def _dot(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Per-problem inner product of two [A, ...] tensors."""
    return (a * b).flatten(1).sum(dim=1)


def _batched_lbfgs(
    problem: _Problem,
    weights: torch.Tensor,
    bias: torch.Tensor,
    which: torch.Tensor,
    n_iter: np.ndarray,
    converged: np.ndarray,
    *,
    max_iter: int,
) -> None:
    """Minimise the objectives F(W) of problems `which` with preconditioned L-BFGS + Armijo backtracking.

    Each problem has its own history, scaling, step and stopping test; finished problems leave the
    batch, so later iterations only pay for the slow ones. Starts from, and writes the solutions into,
    rows `which` of `weights` [G, d, K] and `bias` [G, K]; sets those rows of `n_iter` (iterations) and
    `converged` (all in place).
    """
    count = which.numel()
    ev = problem.evaluate(weights[which], bias[which], which)
    steps = torch.zeros(count, dtype=torch.int64)  # per row of the block
    done_rows = torch.zeros(count, dtype=torch.bool)
    empty = torch.zeros(_HISTORY, count, *weights.shape[1:], dtype=torch.float64)
    state = _LbfgsState(
        which, weights[which], ev, empty, empty.clone(),
        torch.zeros(_HISTORY, count, dtype=torch.float64), torch.ones(count, dtype=torch.float64),
    )  # fmt: skip
    rows = torch.arange(count)  # block row of each problem still in the batch
    for iteration in range(max_iter + 1):
        slot = iteration % _HISTORY
        direction = -_two_loop(problem, state, slot, min(iteration, _HISTORY))
        slope = _dot(state.ev.grad, direction)
        uphill = slope >= 0  # a stale history can point uphill: fall back to the preconditioned gradient
        if uphill.any():
            fallback = problem.precondition(
                state.ev.grad[uphill], state.which[uphill], state.ev.curvature[uphill]
            )
            direction[uphill] = -state.gamma[uphill, None, None] * fallback
            slope = _dot(state.ev.grad, direction)
        done = problem.converged(state.ev, -0.5 * slope)
        if done.any() or iteration == max_iter:
            done_rows[rows] = done
            finished = done if iteration < max_iter else torch.ones_like(done)
            weights[state.which[finished]] = state.w[finished]
            bias[state.which[finished]] = state.ev.bias[finished]
            state, direction, slope, rows = state.keep(~done), direction[~done], slope[~done], rows[~done]
        if state.which.numel() == 0 or iteration == max_iter:
            break
        new_w, new_ev, found = _armijo(problem, state, direction, slope)
        step, change = new_w - state.w, new_ev.grad - state.ev.grad
        sy = _dot(step, change)
        y_h_y = _dot(change, problem.precondition(change, state.which, new_ev.curvature))
        ok = found & (sy > 1e-10 * _dot(change, change)) & (y_h_y > 0)
        state.s_hist[slot], state.y_hist[slot] = step, change
        state.rho[slot] = torch.where(ok, 1.0 / sy.where(ok, torch.ones_like(sy)), 0.0)
        state.gamma = torch.where(ok, sy / y_h_y.where(ok, torch.ones_like(y_h_y)), state.gamma)
        state.w, state.ev = new_w, new_ev
        steps[rows] += 1
        if not found.all():  # a failed line search means no further progress is possible here
            done_rows[rows[~found]] = problem.converged(new_ev.take(~found), torch.zeros(int((~found).sum())))
            weights[state.which[~found]] = new_w[~found]
            bias[state.which[~found]] = new_ev.bias[~found]
            state, rows = state.keep(found), rows[found]
    weights[state.which], bias[state.which] = state.w, state.ev.bias
    n_iter[which.numpy()], converged[which.numpy()] = steps.numpy(), done_rows.numpy()


def _two_loop(problem: _Problem, state: _LbfgsState, slot: int, n_pairs: int) -> torch.Tensor:
    """The L-BFGS inverse-Hessian product H·grad for every problem (rows), newest pair first."""
    q = state.ev.grad.clone()
    order = [(slot - 1 - j) % _HISTORY for j in range(n_pairs)]
    alphas = []
    for j in order:
        alpha = state.rho[j] * _dot(state.s_hist[j], q)
        q -= alpha[:, None, None] * state.y_hist[j]
        alphas.append(alpha)
    r = state.gamma[:, None, None] * problem.precondition(q, state.which, state.ev.curvature)
    for j, alpha in zip(reversed(order), reversed(alphas), strict=True):
        beta = state.rho[j] * _dot(state.y_hist[j], r)
        r += (alpha - beta)[:, None, None] * state.s_hist[j]
    return r


def _armijo(
    problem: _Problem, state: _LbfgsState, direction: torch.Tensor, slope: torch.Tensor
) -> tuple[torch.Tensor, _Evaluation, torch.Tensor]:
    """Backtracking from step 1, halving per problem until sufficient decrease.

    Returns (weights, evaluation, found); where no acceptable step was found, the current point is kept.
    """
    new_w, new_ev = state.w.clone(), state.ev.take(torch.arange(len(state.which)))
    step = torch.ones_like(state.ev.f)
    pending = torch.ones_like(state.ev.f, dtype=torch.bool)
    for _ in range(_MAX_LINE_SEARCH):
        rows = pending.nonzero().squeeze(1)
        trial = state.w[rows] + step[rows, None, None] * direction[rows]
        trial_ev = problem.evaluate(trial, state.ev.bias[rows], state.which[rows])
        ok = trial_ev.f <= state.ev.f[rows] + _ARMIJO * step[rows] * slope[rows]
        accepted = rows[ok]
        new_w[accepted] = trial[ok]
        new_ev.put(accepted, trial_ev.take(ok))
        pending[accepted] = False
        step[rows[~ok]] *= 0.5
        if not pending.any():
            break
    return new_w, new_ev, ~pending
