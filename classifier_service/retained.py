"""Training data kept with a version: its texts and labels, and a reference sample.

A fit through the gateway sends the training texts with the features (unless the caller trained with
``"retain_texts": false``). They are the user's data: stored as artifacts of the version (so hashed in
its manifest, written before it, deleted with the version), served only to the gateway behind the
internal token, and never logged.

- ``training.json``: every text and its label, in the order they were fitted;
- ``reference.json``: up to ``reference_sample`` rows, stratified by label and chosen deterministically,
  with the probabilities the fitted version gave them at fit time. The gateway re-encodes these texts
  on another encoder that computes the same space differently (bfloat16, onnxruntime) and accepts it
  when the version's labels agree (measured acceptance).
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from classifier_service.store import MANIFEST_FILE
from services.errors import NotFound, SeamError

TRAINING_FILE = "training.json"
REFERENCE_FILE = "reference.json"
_SEED = 0


class NoRetainedData(NotFound):
    """A version kept no training data: fitted before it was kept, or trained with ``retain_texts: false``."""

    title, slug = "No retained training data", "no-retained-data"


class DamagedRetainedData(SeamError):
    """A kept artifact no longer matches its manifest: the store was damaged or written by hand."""

    title, slug = "Damaged store entry", "damaged-store-entry"


@dataclass(frozen=True)
class Retained:
    """What a fit keeps: the texts (one per row) and how many of them make the reference sample."""

    texts: list[str]
    reference_size: int


def reference_rows(labels: np.ndarray, size: int) -> np.ndarray:
    """Up to ``size`` row indices, stratified by label (each class in proportion, at least one each while
    the size allows), the same for the same labels every time. Sorted."""
    n = len(labels)
    if size <= 0 or n == 0:
        return np.zeros(0, dtype=np.int64)
    if size >= n:
        return np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts / n * size
    quota = np.floor(exact).astype(int)
    if size >= len(classes):
        quota = np.maximum(quota, 1)
    # Largest remainders take what rounding down left over; a class never gets more rows than it has.
    for i in np.argsort(-(exact - np.floor(exact)), kind="stable"):
        if quota.sum() >= size:
            break
        quota[i] += 1
    while quota.sum() > size:
        quota[int(np.argmax(quota))] -= 1
    quota = np.minimum(quota, counts)
    rng = np.random.default_rng(_SEED)
    chosen = []
    for cls, k in zip(classes, quota):
        rows = np.flatnonzero(labels == cls)
        chosen.append(np.sort(rng.permutation(rows)[:k]))
    return np.sort(np.concatenate(chosen))


def _write_json(path: Path, data: Any) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(data, f, ensure_ascii=False, separators=(",", ":"))
        f.flush()
        os.fsync(f.fileno())


def write(folder: Path, retained: Retained, labels: np.ndarray, rows: np.ndarray, classes: list[str],
          probabilities: np.ndarray) -> dict[str, Any]:
    """Writes both artifacts into a version's folder (before its manifest); returns the record's summary."""
    _write_json(folder / TRAINING_FILE, {"texts": retained.texts, "labels": [str(label) for label in labels]})
    _write_json(folder / REFERENCE_FILE, {
        "rows": [int(i) for i in rows],
        "texts": [retained.texts[i] for i in rows],
        "labels": [str(labels[i]) for i in rows],
        "classes": classes,
        "probabilities": np.asarray(probabilities, dtype=np.float64).round(8).tolist(),
    })
    return {"texts": len(retained.texts), "reference_sample": int(len(rows))}


def read(folder: Path, filename: str, *, name: str, version: int, summary: dict[str, Any] | None) -> dict[str, Any]:
    """One artifact of a version, checked against the SHA-256 its manifest records."""
    if not summary or not (folder / filename).is_file():
        raise NoRetainedData(
            f"model {name!r} version {version} kept no training data: it was fitted before seam kept it, or "
            "trained with \"retain_texts\": false. Train it again through the gateway to keep it.",
            name=name, version=version,
        )
    try:
        content = (folder / filename).read_bytes()
        manifest = json.loads((folder / MANIFEST_FILE).read_bytes())
        if manifest.get("artifacts", {}).get(filename) != hashlib.sha256(content).hexdigest():
            raise DamagedRetainedData(f"{name}/{version}/{filename} does not match the SHA-256 its manifest records "
                                      "(damaged or replaced); the version's kept data cannot be served")
        return json.loads(content)
    except (OSError, ValueError, AttributeError) as exc:
        raise DamagedRetainedData(f"{name}/{version}/{filename} is unreadable ({type(exc).__name__})") from exc
