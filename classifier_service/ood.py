"""How far a row lies from a version's training data: the out-of-distribution score.

The summary kept with each version (``ood.safetensors``, a few KB): the unit-length centroid of each
class's training vectors (one centroid for a regression), and the sorted distances of the training
vectors to their own class's centroid, each computed with that vector left out of the centroid (so
that they are distances of unseen rows, not of rows the centroid was made from). At most
``_QUANTILES`` of them are kept.

Distance: cosine distance (1 - cosine) to the nearest centroid. Score: the share of training
distances below this row's distance, in [0, 1]: a row as close to the training data as a typical
training row scores about 0.5, one farther than every training row scores 1.0. A row is in
distribution when its score is below the threshold (``CLASSIFIER_OOD_THRESHOLD``).

The vectors are what the estimator sees: after preprocessing, token sequences mean-pooled.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from safetensors.numpy import load_file, save_file

OOD_FILE = "ood.safetensors"
METHOD = "nearest-centroid cosine distance; score: share of leave-one-out training distances below it"
_QUANTILES = 513


def _unit(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    return x / np.where(norms > 0, norms, 1.0)


class OodSummary:
    def __init__(self, centroids: np.ndarray, distances: np.ndarray) -> None:
        self.centroids = np.ascontiguousarray(centroids, dtype=np.float32)  # (groups, dim), unit length
        self.distances = np.ascontiguousarray(distances, dtype=np.float64)  # sorted, at most _QUANTILES
        self.levels = np.linspace(0.0, 1.0, len(self.distances)) if len(self.distances) > 1 else np.array([0.0])

    @classmethod
    def fit(cls, vectors: np.ndarray, groups: np.ndarray | None) -> OodSummary:
        """``groups``: each row's class (None: a single group)."""
        unit = _unit(vectors)
        if groups is None:
            groups = np.zeros(len(unit), dtype=np.int64)
        names, index = np.unique(np.asarray(groups), return_inverse=True)
        sums = np.zeros((len(names), unit.shape[1]))
        np.add.at(sums, index, unit)
        counts = np.bincount(index, minlength=len(names)).astype(np.float64)
        own_sum = sums[index]
        # Leave-one-out: the centroid of the row's class without the row (the row itself when it is alone).
        loo = np.where((counts[index] > 1)[:, None], own_sum - unit, unit)
        distances = 1.0 - np.einsum("ij,ij->i", unit, _unit(loo))
        distances = np.sort(distances)
        if len(distances) > _QUANTILES:
            distances = np.quantile(distances, np.linspace(0.0, 1.0, _QUANTILES))
        return cls(_unit(sums), distances)

    def distance(self, vectors: np.ndarray) -> np.ndarray:
        # Few numpy calls: this runs on every prediction (a lone row costs tens of microseconds).
        x = np.asarray(vectors, dtype=np.float32)
        norms = np.sqrt(np.einsum("ij,ij->i", x, x))
        cosine = (x @ self.centroids.T).max(axis=1) / np.maximum(norms, 1e-12)
        return 1.0 - cosine.astype(np.float64)

    def score(self, vectors: np.ndarray) -> np.ndarray:
        """The share of training distances below each row's distance, in [0, 1]."""
        d = self.distance(vectors)
        if len(self.distances) == 1:
            return (d > self.distances[0]).astype(np.float64)
        return np.interp(d, self.distances, self.levels, left=0.0, right=1.0)

    def save(self, folder: Path) -> None:
        save_file({"centroids": self.centroids, "distances": self.distances}, str(folder / OOD_FILE),
                  metadata={"method": METHOD})

    @classmethod
    def load(cls, folder: Path) -> OodSummary | None:
        path = folder / OOD_FILE
        if not path.exists():  # versions saved before summaries existed
            return None
        arrays = load_file(str(path))
        if set(arrays) != {"centroids", "distances"} or arrays["centroids"].ndim != 2:
            raise ValueError(f"{OOD_FILE} is not an OOD summary")
        return cls(arrays["centroids"], arrays["distances"])
