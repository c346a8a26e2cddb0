"""A small L2-regularised logistic regression (Newton / IRLS in numpy) and Platt calibration.

Inputs are standardised inside the model (the mean and scale are part of it), so callers pass raw
feature matrices. With a few dozen features Newton's method converges in ~10 steps.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def _sigmoid(z: np.ndarray) -> np.ndarray:
    return 1.0 / (1.0 + np.exp(-np.clip(z, -35, 35)))


def _newton(x: np.ndarray, y: np.ndarray, l2: float, max_iter: int = 50) -> np.ndarray:
    """Weights (bias first) minimising mean log-loss + l2/2 |w|^2 (bias not penalised)."""
    n, d = x.shape
    xb = np.hstack([np.ones((n, 1)), x])
    w = np.zeros(d + 1)
    rate = np.clip(y.mean(), 1e-6, 1 - 1e-6)
    w[0] = np.log(rate / (1 - rate))
    penalty = np.full(d + 1, l2)
    penalty[0] = 0.0
    def loss(w: np.ndarray) -> float:
        z = xb @ w
        return float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * (penalty * w * w).sum())

    current = loss(w)
    for _ in range(max_iter):
        p = _sigmoid(xb @ w)
        grad = xb.T @ (p - y) / n + penalty * w
        hess = (xb * (p * (1 - p))[:, None]).T @ xb / n + np.diag(penalty + 1e-9)
        step = np.linalg.solve(hess, grad)
        # damped Newton: halve the step until the loss goes down (plain Newton can overshoot)
        for _ in range(30):
            trial = loss(w - step)
            if trial <= current:
                break
            step = step / 2
        w = w - step
        improved, current = current - trial, trial
        if np.abs(step).max() < 1e-7 or improved < 1e-12:
            break
    return w


@dataclass
class LogisticModel:
    weights: np.ndarray  # bias first
    mean: np.ndarray
    scale: np.ndarray
    calibration: tuple[float, float] = (1.0, 0.0)  # Platt: sigmoid(a * logit + b)

    @classmethod
    def fit(cls, x: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> LogisticModel:
        x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
        if len(np.unique(y)) < 2:
            raise ValueError("both outcomes are needed to fit a logistic model (the label window has only one)")
        mean, scale = x.mean(0), x.std(0)
        scale = np.where(scale > 1e-12, scale, 1.0)
        return cls(_newton((x - mean) / scale, y, l2), mean, scale)

    def logit(self, x: np.ndarray) -> np.ndarray:
        z = (np.asarray(x, dtype=np.float64) - self.mean) / self.scale
        return self.weights[0] + z @ self.weights[1:]

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        a, b = self.calibration
        return _sigmoid(a * self.logit(x) + b)

    def calibrate(self, x: np.ndarray, y: np.ndarray) -> LogisticModel:
        """Platt scaling on held-out data: corrects over-confidence of the fitted logits."""
        w = _newton(self.logit(x)[:, None], np.asarray(y, dtype=np.float64), 1e-6)
        self.calibration = (float(w[1]), float(w[0]))
        return self
