"""A cheap "do these look like digits?" probe for MNIST samples, until FID runs here.

A logistic-regression classifier fit on real MNIST is confident on most real digits and on almost no
speckle; the fraction of samples it is confident about (and how many classes they cover) separates
noise, strokes and digits in a few seconds on a CPU. It is a coarse check, not a quality metric to
publish: FID is.
"""

from __future__ import annotations

import numpy as np


def fit_digit_probe(limit: int = 10000, root=None):
    """Logistic regression on the first ``limit`` MNIST training images (pixels in [0, 1])."""
    from sklearn.linear_model import LogisticRegression

    from ..data import load_images

    x, y = load_images("mnist", "train", limit=limit, root=root)
    return LogisticRegression(max_iter=200, C=0.1).fit(x.reshape(len(x), -1) / 255.0, y)


def digit_probe_score(clf, images: np.ndarray, threshold: float = 0.9) -> dict:
    """images (N, 28, 28) in [0, 1] -> fraction classified with p > threshold, classes seen, counts."""
    proba = clf.predict_proba(np.asarray(images).reshape(len(images), -1))
    labels = proba.argmax(1)
    return {"confident": float((proba.max(1) > threshold).mean()), "classes": int(len(set(labels.tolist()))),
            "counts": np.bincount(labels, minlength=10).tolist()}
