"""Distances between two sets of image features (N x D arrays), in float64 NumPy.

KID (Bińkowski et al. 2018) is the squared MMD with the cubic polynomial kernel
k(x, y) = (x.y / D + 1)^3, estimated without bias on random subsets; we report the mean
and standard deviation over subsets. It is the headline distance because it is unbiased
at test-set sizes (~100 images).

The Fréchet distance (Heusel et al. 2017) fits a Gaussian to each set. With 1280-d
features and ~130 images the covariance estimates have rank <= 129, so the figure is
biased upward and only comparable between runs on the same test set and feature network.
"""
from __future__ import annotations

import numpy as np


def polynomial_kernel(x: np.ndarray, y: np.ndarray) -> np.ndarray:
    return (x @ y.T / x.shape[1] + 1.0) ** 3


def mmd2_unbiased(x: np.ndarray, y: np.ndarray) -> float:
    """Unbiased squared MMD between two samples of equal size m (diagonals excluded)."""
    m = x.shape[0]
    kxx, kyy, kxy = polynomial_kernel(x, x), polynomial_kernel(y, y), polynomial_kernel(x, y)
    sum_xx = kxx.sum() - np.trace(kxx)
    sum_yy = kyy.sum() - np.trace(kyy)
    return float((sum_xx + sum_yy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m))


def kid(x: np.ndarray, y: np.ndarray, subsets: int = 50, subset_size: int = 100,
        seed: int = 0) -> tuple[float, float]:
    """(mean, std) of the unbiased MMD^2 over ``subsets`` random subsets drawn without
    replacement from each set; the subset size shrinks to the smaller set if needed."""
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    m = min(subset_size, x.shape[0], y.shape[0])
    if m < 2:
        raise ValueError(f"KID needs at least 2 features per set, got {x.shape[0]} and {y.shape[0]}")
    rng = np.random.default_rng(seed)
    values = np.array([mmd2_unbiased(x[rng.choice(x.shape[0], m, replace=False)],
                                     y[rng.choice(y.shape[0], m, replace=False)])
                       for _ in range(max(subsets, 1))])
    return float(values.mean()), float(values.std())


def gaussian_stats(features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    features = np.asarray(features, dtype=np.float64)
    if features.shape[0] < 2:
        raise ValueError(f"a covariance needs at least 2 features, got {features.shape[0]}")
    return features.mean(axis=0), np.cov(features, rowvar=False)


def _sqrt_psd(matrix: np.ndarray) -> np.ndarray:
    values, vectors = np.linalg.eigh(matrix)
    return (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T


def frechet_distance(mu1: np.ndarray, sigma1: np.ndarray, mu2: np.ndarray, sigma2: np.ndarray) -> float:
    """||mu1 - mu2||^2 + Tr(S1 + S2 - 2 (S1 S2)^(1/2)).

    Tr((S1 S2)^(1/2)) equals the sum of square roots of the eigenvalues of the symmetric
    PSD matrix S1^(1/2) S2 S1^(1/2), which avoids a non-symmetric ``sqrtm`` and its complex
    round-off on rank-deficient covariances.
    """
    root1 = _sqrt_psd(sigma1)
    middle = root1 @ sigma2 @ root1
    eig = np.linalg.eigvalsh((middle + middle.T) / 2)
    trace_sqrt = np.sqrt(np.clip(eig, 0, None)).sum()
    diff = mu1 - mu2
    value = float(diff @ diff + np.trace(sigma1) + np.trace(sigma2) - 2 * trace_sqrt)
    return max(value, 0.0)


def frechet_distance_features(x: np.ndarray, y: np.ndarray) -> float:
    """Fréchet distance between the Gaussians fitted to two feature sets.

    With fewer images than feature dimensions (the usual case: ~130 images, 1280-d) the
    covariances have rank < n, and Tr((S1 S2)^(1/2)) is the nuclear norm of the small
    n1 x n2 matrix Xc Yc^T / sqrt((n1 - 1)(n2 - 1)) of centred features: the nonzero
    eigenvalues of S1 S2 are the squared singular values of that matrix. That is exact and
    costs an n1 x n2 SVD instead of two D x D eigendecompositions.
    """
    x, y = np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64)
    n1, n2, d = x.shape[0], y.shape[0], x.shape[1]
    if min(n1, n2) < 2:
        raise ValueError(f"the Fréchet distance needs at least 2 features per set, got {n1} and {n2}")
    if max(n1, n2) > d:
        return frechet_distance(*gaussian_stats(x), *gaussian_stats(y))
    xc, yc = x - x.mean(axis=0), y - y.mean(axis=0)
    trace_sqrt = np.linalg.svd(xc @ yc.T, compute_uv=False).sum() / np.sqrt((n1 - 1) * (n2 - 1))
    diff = x.mean(axis=0) - y.mean(axis=0)
    trace1, trace2 = (xc * xc).sum() / (n1 - 1), (yc * yc).sum() / (n2 - 1)
    return max(float(diff @ diff + trace1 + trace2 - 2 * trace_sqrt), 0.0)
