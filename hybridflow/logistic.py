"""Standardised multinomial logistic regression in float32 torch: the solver of the linear probes.

The model, objective and optimiser are scikit-learn's ``make_pipeline(StandardScaler(),
LogisticRegression(C=C))``: features standardised with the fit rows' mean and standard deviation
(a constant feature keeps scale 1), softmax of ``x_std @ W + b``, the mean cross-entropy plus
``||W||^2 / (2 C n)`` (intercept not penalised), minimised by scipy's L-BFGS-B with scikit-learn's
stopping rule (largest gradient entry below ``tol``, at most ``max_iter`` iterations). What
differs is the arithmetic, which is where scikit-learn spends its time on probe-sized problems
(60,000 rows of 6,000-10,000 features: it converts them to float64, copies them for the scaler
and for the split, and runs the loss in float64):

- the loss and its gradient run in float32 torch, a chunk of rows at a time, the forward and the
  backward product of a chunk back to back while it is still in cache;
- the features are standardised once per fit into one float32 buffer, gathering the fit rows
  (``rows``) on the way: no float64 copy, no separate split copy;
- a path over several ``C`` warm-starts each fit from the previous one, and ``init`` can start
  them from another fit's solutions (the probe starts each seed from the previous seed's path).

Example:
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> y = np.arange(200) % 2
    >>> x = rng.normal(size=(200, 3)).astype(np.float32) + 3 * y[:, None]
    >>> fit = fit_logistic_path(x, y, Cs=[0.01, 1.0])
    >>> fit.predict_proba(x, 1).shape, float((fit.predict(x, 1) == y).mean()) > 0.95
    ((200, 2), True)
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor

__all__ = ["LogisticFit", "fit_logistic_path", "as_float32_rows"]

_CHUNK = 512  # rows per product: a 512 x 10,000 float32 chunk (20 MB) is read once for both products


def as_float32_rows(x: Any, what: str = "features") -> Tensor:
    """``x`` as a 2-D float32 CPU tensor, sharing memory with a float32 array (no copy).

    Example:
        >>> as_float32_rows(np.zeros((2, 3))).dtype
        torch.float32
    """
    t = x.detach().cpu() if isinstance(x, Tensor) else torch.from_numpy(np.asarray(x, dtype=np.float32))
    if t.dim() != 2:
        raise ValueError(f"{what} must be 2-D (n_samples, n_features), got shape {tuple(t.shape)}")
    return t.float()


@dataclass
class LogisticFit:
    """One fitted probe per ``C``: the standardisation and, per ``C``, weights and intercept.

    Attributes:
        mean, scale: ``(D,)`` float32: the fit rows' mean and standard deviation (1 where 0).
        coef: ``(len(Cs), D, K)`` on the standardised features; intercept: ``(len(Cs), K)``.
        classes: the ``K`` class labels, sorted (``np.unique`` of the fit rows' labels).
        Cs: the inverse regularisation strengths, in the order given.
        evaluations: loss-and-gradient evaluations per ``C`` (what the fit cost).
    """

    mean: Tensor
    scale: Tensor
    coef: Tensor
    intercept: Tensor
    classes: np.ndarray
    Cs: list[float]
    evaluations: list[int] = field(default_factory=list)

    def solutions(self) -> Tensor:
        """Standardised weights then intercept per ``C``, ``(len(Cs), D + 1, K)``: another fit's ``init``."""
        return torch.cat([self.coef, self.intercept[:, None]], 1)

    def decision_function(self, x: Any, index: int = 0) -> Tensor:
        """Logits ``(N, K)`` of the ``index``-th ``C``'s model, standardised chunk by chunk."""
        rows = as_float32_rows(x)
        if rows.shape[1] != self.coef.shape[1]:
            raise ValueError(f"the probe was fitted on {self.coef.shape[1]} features, got {rows.shape[1]}")
        w, b = self.coef[index], self.intercept[index]
        return torch.cat([torch.addmm(b, (chunk - self.mean) / self.scale, w) for chunk in rows.split(8 * _CHUNK)])

    def predict_proba(self, x: Any, index: int = 0) -> np.ndarray:
        """Class probabilities ``(N, K)`` as float64, columns in :attr:`classes` order."""
        return torch.softmax(self.decision_function(x, index).double(), 1).numpy()

    def predict(self, x: Any, index: int = 0) -> np.ndarray:
        """The most probable class label of each row."""
        return self.classes[self.decision_function(x, index).argmax(1).numpy()]


def _standardised(x: Tensor, rows: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """``(x[rows] - mean) / scale`` as a new float32 buffer, with the float64-accumulated mean and
    population standard deviation of ``x[rows]`` (a constant column keeps scale 1, as StandardScaler)."""
    total = torch.zeros(x.shape[1], dtype=torch.float64)
    for idx in rows.split(8 * _CHUNK):
        total += x[idx].sum(0, dtype=torch.float64)
    mean = total / len(rows)
    squares = torch.zeros_like(total)
    for idx in rows.split(8 * _CHUNK):
        squares += (x[idx].double() - mean).pow(2).sum(0)
    scale = (squares / len(rows)).sqrt()
    scale[scale <= 10 * np.finfo(np.float64).eps * mean.abs().clamp_min(1.0)] = 1.0
    mean, scale = mean.float(), scale.float()
    out = torch.empty(len(rows), x.shape[1])
    for start, idx in zip(range(0, len(rows), 8 * _CHUNK), rows.split(8 * _CHUNK)):
        torch.div(x[idx] - mean, scale, out=out[start:start + len(idx)])
    return out, mean, scale


def _loss_and_gradient(xs: Tensor, target: Tensor, penalty: float, k: int, counter: list[int], bar: Any):
    """scipy's ``fun(w) -> (f, grad)`` for flat float64 ``w`` = ``(D + 1, K)`` (weights, then intercept)."""
    n, d = xs.shape
    chunks = list(zip(xs.split(_CHUNK), target.split(_CHUNK)))

    def fun(flat: np.ndarray) -> tuple[float, np.ndarray]:
        w = torch.from_numpy(flat).view(d + 1, k).float()
        weight, bias = w[:d], w[d]
        grad = torch.zeros(k, d)
        grad_bias = torch.zeros(k, dtype=torch.float64)
        loss = 0.0
        for chunk, t in chunks:
            log_p = torch.log_softmax(torch.addmm(bias, chunk, weight), 1)
            loss -= float(log_p.gather(1, t[:, None]).sum(dtype=torch.float64))
            residual = log_p.exp_()
            residual[torch.arange(len(t)), t] -= 1.0  # softmax minus one-hot: d loss / d logits
            grad.addmm_(residual.T, chunk)  # (K, rows) @ (rows, D): the chunk is still in cache
            grad_bias += residual.sum(0, dtype=torch.float64)
        w64 = torch.from_numpy(flat).view(d + 1, k)
        value = loss / n + 0.5 * penalty * float(w64[:d].pow(2).sum())
        gradient = torch.cat([grad.T.double() / n + penalty * w64[:d], (grad_bias / n)[None]])
        counter[0] += 1
        if bar is not None:
            bar.set_postfix_str(f"{counter[0]} evaluations", refresh=False)
        return value, gradient.numpy().ravel()

    return fun


def fit_logistic_path(x: Any, y: Any, Cs: Sequence[float] = (1.0,), rows: Any = None, tol: float = 1e-4,
                      max_iter: int = 300, init: Tensor | None = None, bar: Any = None) -> LogisticFit:
    """Fit a standardised multinomial logistic regression for every ``C`` in ``Cs`` on ``x[rows]``.

    ``rows`` (default: all) index the fit rows of ``x`` and ``y``: a validation split costs no
    copy of the features beyond the one standardised buffer. The ``C`` are fitted in increasing
    order, each from the previous solution, or from ``init[j]`` (``(len(Cs), D + 1, K)``,
    standardised weights then intercept: another fit's :meth:`LogisticFit.solutions`)
    when given. ``bar`` (a tqdm bar) advances by one per ``C`` and shows the evaluations.

    Example:
        >>> x = np.array([[0.0], [1.0], [2.0], [3.0]], np.float32)
        >>> fit_logistic_path(x, [0, 0, 1, 1], Cs=[10.0]).predict(x).tolist()
        [0, 0, 1, 1]
    """
    from scipy.optimize import minimize  # scipy loads on the first fit, not on import

    features = as_float32_rows(x)
    labels = np.asarray(y.detach().cpu() if isinstance(y, Tensor) else y)
    if labels.shape != (len(features),):
        raise ValueError(f"y must hold one label per row of x ({len(features)}), got shape {labels.shape}")
    index = torch.arange(len(features)) if rows is None else torch.as_tensor(np.asarray(rows), dtype=torch.int64)
    if len(index) == 0:
        raise ValueError("no rows to fit")
    classes, codes = np.unique(labels[index.numpy()], return_inverse=True)
    if len(classes) < 2:
        raise ValueError("logistic regression needs at least two classes in the fit rows")
    Cs = [float(c) for c in Cs]
    if not Cs or not all(c > 0 and math.isfinite(c) for c in Cs):
        raise ValueError(f"Cs must hold positive finite values, got {Cs}")
    n, d, k = len(index), features.shape[1], len(classes)
    if init is not None and tuple(init.shape) != (len(Cs), d + 1, k):
        raise ValueError(f"init must have shape {(len(Cs), d + 1, k)}, got {tuple(init.shape)}")
    xs, mean, scale = _standardised(features, index)
    target = torch.as_tensor(codes, dtype=torch.int64)
    solutions: dict[int, Tensor] = {}
    evaluations: dict[int, int] = {}
    start = np.zeros((d + 1) * k)
    for j in sorted(range(len(Cs)), key=lambda i: Cs[i]):
        if init is not None:
            start = init[j].double().numpy().ravel()
        counter = [0]
        # scikit-learn's options: its tolerance on the largest gradient entry, its line search budget
        result = minimize(_loss_and_gradient(xs, target, 1.0 / (Cs[j] * n), k, counter, bar), start,
                          method="L-BFGS-B", jac=True,
                          options=dict(maxiter=max_iter, maxls=50, gtol=tol, ftol=64 * np.finfo(float).eps))
        start = result.x
        solutions[j], evaluations[j] = torch.from_numpy(result.x).view(d + 1, k).float(), counter[0]
        if bar is not None:
            bar.update(1)
    stacked = torch.stack([solutions[j] for j in range(len(Cs))])
    return LogisticFit(mean, scale, stacked[:, :d].contiguous(), stacked[:, d].contiguous(), classes, Cs,
                       [evaluations[j] for j in range(len(Cs))])
