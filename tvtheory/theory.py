"""The paper's predictions as functions (theory.md section 5). Constants the paper leaves as Theta(.) are arguments."""

from __future__ import annotations

import numpy as np


def addition_threshold(alpha, beta: float = 0.0):
    """Theorem 1: for alpha >= 0, Psi_0 + dPsi_T1 + lambda dPsi_T2 learns both tasks once lambda >= 1 - alpha + beta.

    NaN for alpha < 0, where no lambda learns both (contradictory tasks).
    """
    alpha = np.asarray(alpha, float)
    return np.where(alpha >= 0, 1.0 - alpha + beta, np.nan)


def negation_lower_bound(alpha, C: float = 1.0):
    """Theorem 2, contradictory tasks: the window is -Theta(alpha^-2) <= lambda <= ~0; -C / alpha^2 (-inf at 0)."""
    alpha = np.asarray(alpha, float)
    with np.errstate(divide="ignore"):
        return np.where(alpha < 0, -C / alpha**2, np.where(alpha == 0, -np.inf, np.nan))


def kept_tolerance(lam, eps: float, beta_add: float, beta_neg: float, cap: float = np.inf):
    """min(Theta(eps) + |lambda| beta, cap): how much a kept task's hinge loss may grow (Theorems 1-2).

    The slope beta is side-specific when measured: adding and negating an irrelevant task vector need not cost T1
    the same. The bound describes a kept task only while it is small next to Theta(1) (the zero predictor's hinge
    loss is 1), hence the cap: beyond it, no lambda can count as keeping T1, whatever beta is.
    """
    lam = np.asarray(lam, float)
    return np.minimum(eps + np.abs(lam) * np.where(lam >= 0, beta_add, beta_neg), cap)


def informative(lam, eps: float, beta_add: float, beta_neg: float, cap: float):
    """Where the kept-task bound eps + |lambda| beta is below the cap, i.e. where Theorems 1-2 say something."""
    lam = np.asarray(lam, float)
    return eps + np.abs(lam) * np.where(lam >= 0, beta_add, beta_neg) <= cap


# Grid points on a boundary of Theorem 3's region (sum lambda_i gamma_i = tau exactly in decimals, e.g. 0.7 + 0.1 =
# 0.8) belong to it, as the conditions are >= and <=; without this slack the float rounding of the sums, which
# differs between CPUs' dot kernels, decided them (ood's region held 64 grid points on one machine and 66 on another).
EDGE = 1e-9


def ood_region(coeffs_GxK, gammas, tau, lam_max=np.inf, tau_ii=None) -> np.ndarray:
    """Theorem 3's sufficient conditions for Psi_0 + sum_i lambda_i dPsi_Ti to generalize to T':
    (i) sum_i lambda_i gamma_i >= tau, (ii) sum_i lambda_i gamma_i^2 >= tau, (iii) |lambda_i| <= c / beta = lam_max.
    The paper's tau is 1 + c with uncalibrated constants; here it is a fitted parameter. Beyond the paper,
    ``tau_ii`` gives condition (ii) its own threshold. tau, tau_ii and lam_max may be arrays: the result then has
    their broadcast shape followed by the G grid points."""
    lam, g = np.asarray(coeffs_GxK, float), np.asarray(gammas, float)
    col = lambda x: np.asarray(x, float)[..., None]  # noqa: E731
    return ((lam @ g >= col(tau) - EDGE) & (lam @ g**2 >= col(tau if tau_ii is None else tau_ii) - EDGE)
            & (np.abs(lam).max(axis=1) <= col(lam_max) + EDGE))
