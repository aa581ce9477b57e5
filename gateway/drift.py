"""Out-of-distribution scores of recent predictions, per pipeline, in this gateway's memory.

Each prediction's ``ood`` score (see :mod:`classifier_service.ood`) goes into a window of the last
``GATEWAY_DRIFT_WINDOW`` scores of its pipeline and into the ``seam_ood_score`` histogram (labelled by
pipeline), so that an alert can fire on a shift. ``GET /v1/pipelines/{name}/drift`` reads the window:
the share out of distribution and the mean score, beside the training baseline. By the score's
definition (the share of training rows closer to their class), rows like the training data score 0.5
on average and fall out of distribution at the rate ``1 - threshold``.

The window is per gateway process: several gateways each see their own share of the traffic.
"""

from __future__ import annotations

from collections import deque
from typing import Any

from prometheus_client import CollectorRegistry, Histogram

OOD_BUCKETS = (0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 0.95, 0.99, 1.0)
_MAX_PIPELINES = 1024  # windows kept; the least recently fed goes first beyond it


def ood_histogram(registry: CollectorRegistry) -> Histogram:
    """The app's ``seam_ood_score`` histogram (made once per app: a lifespan may run more than once)."""
    return Histogram(
        "seam_ood_score", "Out-of-distribution scores of predictions, by pipeline (0: like the training data).",
        ["pipeline"], buckets=OOD_BUCKETS, registry=registry,
    )


class DriftMonitor:
    def __init__(self, window: int, histogram: Histogram | None = None) -> None:
        self.window = window
        self._scores: dict[str, deque[tuple[float, bool]]] = {}
        self._thresholds: dict[str, float] = {}
        self.histogram = histogram

    def record(self, pipeline: str, scores: list[float], inside: list[bool], threshold: float | None = None) -> None:
        window = self._scores.pop(pipeline, None) or deque(maxlen=self.window)
        self._scores[pipeline] = window  # most recently fed last
        if threshold is not None:
            self._thresholds[pipeline] = threshold
        if len(self._scores) > _MAX_PIPELINES:
            oldest = next(iter(self._scores))
            del self._scores[oldest]
            self._thresholds.pop(oldest, None)
        window.extend(zip(scores, inside))
        if self.histogram is not None:
            child = self.histogram.labels(pipeline=pipeline)
            for score in scores:
                child.observe(score)

    def report(self, pipeline: str, version: int) -> dict[str, Any]:
        window = list(self._scores.get(pipeline, ()))
        threshold = self._thresholds.get(pipeline)
        n = len(window)
        out_share = sum(1 for _, ok in window if not ok) / n if n else None
        mean = sum(s for s, _ in window) / n if n else None
        baseline_out = None if threshold is None else round(1.0 - threshold, 6)
        return {
            "name": pipeline,
            "version": version,
            "window": self.window,
            "predictions": n,
            "out_of_distribution_share": out_share,
            "mean_score": mean,
            "threshold": threshold,
            "baseline": {"mean_score": 0.5, "out_of_distribution_share": baseline_out},
            "shift": None if mean is None else mean - 0.5,
        }
