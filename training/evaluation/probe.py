"""A linear domain probe: logistic regression on image features, A = 0, B = 1.

It is fitted on real training images (at most ``evaluate.probe_max_per_domain`` per
domain, a seeded random subset) and then asked which domain translations look like.
Its accuracy on the real test images is the ceiling a perfect translator could reach;
its verdict on the untranslated test images is the floor (what the identity map gets).
scikit-learn is imported here, lazily, so ``training`` imports with torch and numpy alone.
"""
from __future__ import annotations

import numpy as np


class DomainProbe:
    def __init__(self, seed: int = 0, C: float = 1.0):
        from sklearn.linear_model import LogisticRegression
        from sklearn.pipeline import make_pipeline
        from sklearn.preprocessing import StandardScaler

        # Standardising first makes the default L2 strength mean the same for any feature
        # scale; lbfgs is deterministic, so the probe is a pure function of its inputs.
        self.model = make_pipeline(StandardScaler(),
                                   LogisticRegression(C=C, max_iter=2000, random_state=seed))

    def fit(self, features_a: np.ndarray, features_b: np.ndarray) -> "DomainProbe":
        x = np.concatenate([features_a, features_b]).astype(np.float64)
        y = np.concatenate([np.zeros(len(features_a), int), np.ones(len(features_b), int)])
        self.model.fit(x, y)
        return self

    def prob_b(self, features: np.ndarray) -> np.ndarray:
        return self.model.predict_proba(np.asarray(features, dtype=np.float64))[:, 1]

    def fraction_b(self, features: np.ndarray) -> float:
        """Share of the images the probe calls domain B."""
        return float((self.prob_b(features) > 0.5).mean())

    def fraction_a(self, features: np.ndarray) -> float:
        """Share of the images the probe calls domain A."""
        return float((self.prob_b(features) <= 0.5).mean())

    def accuracy(self, features_a: np.ndarray, features_b: np.ndarray) -> float:
        correct = (self.prob_b(features_a) <= 0.5).sum() + (self.prob_b(features_b) > 0.5).sum()
        return float(correct / (len(features_a) + len(features_b)))


def subset_indices(n: int, cap: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded random subset of size min(n, cap); cap <= 0 keeps all."""
    if cap <= 0 or n <= cap:
        return np.arange(n)
    return np.sort(np.random.default_rng(seed).choice(n, cap, replace=False))
