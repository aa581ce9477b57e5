"""The typed results of :mod:`seam.client` (each keeps the whole answer in ``raw``). Import them from
``seam.client``."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from seam.problems import Mismatch


@dataclass(frozen=True)
class Prediction:
    label: str
    probabilities: dict[str, float]
    truncated: bool


@dataclass(frozen=True)
class PredictResult:
    name: str
    version: int
    predictions: list[Prediction]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PredictResult:
        predictions = [Prediction(p["label"], dict(p["probabilities"]), bool(p.get("truncated")))
                       for p in d["predictions"]]
        return cls(d["name"], d["version"], predictions, d)

    @property
    def labels(self) -> list[str]:
        return [p.label for p in self.predictions]


@dataclass(frozen=True)
class _Fitted:
    """What every answer about one fitted version names first."""

    name: str
    version: int
    estimator: str


@dataclass(frozen=True)
class TrainResult(_Fitted):
    feature: str
    classes: list[str]
    metrics: dict[str, Any]
    truncated_texts: int
    input_contract: dict[str, Any]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> TrainResult:
        return cls(d["name"], d["version"], d.get("estimator", ""), d.get("feature", ""), list(d.get("classes", [])),
                   dict(d.get("metrics") or {}), int(d.get("truncated_texts") or 0), dict(d.get("input_contract") or {}), d)


@dataclass(frozen=True)
class Link:
    """One link of a chain: what produces its input and the classifier model that consumes it."""

    source: Any
    producer: str | None
    consumer: dict[str, Any]
    compatible: bool
    mismatches: list[Mismatch]


@dataclass(frozen=True)
class PipelineReport(_Fitted):
    classes: list[str]
    compatible: bool
    mismatches: list[Mismatch]
    chain: list[Link]
    raw: dict[str, Any] = field(repr=False, compare=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> PipelineReport:
        chain = [Link(link.get("source"), link.get("producer"), dict(link.get("consumer") or {}), bool(link.get("compatible")),
                      [Mismatch.from_dict(m) for m in link.get("mismatches", [])]) for link in d.get("chain", [])]
        return cls(d["name"], d["version"], d.get("estimator", ""), list(d.get("classes") or []), bool(d.get("compatible")),
                   [Mismatch.from_dict(m) for m in d.get("mismatches", [])], chain, d)
