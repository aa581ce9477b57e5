"""Preprocessing fitted with the model: ``"preprocess": ["standardize", {"pca": 64}, "l2_normalize"]``.

The steps are fitted on the training features (scikit-learn's StandardScaler and PCA fit them; their
arrays are kept, and applied here with numpy), stored with the version (``preprocess.safetensors``)
and listed in its record. They run on what the encoder emits, before the estimator: for token
sequences, on every token vector. The input contract stays the encoder's.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
from safetensors.numpy import load_file, save_file
from sklearn.decomposition import PCA
from sklearn.preprocessing import StandardScaler

from services.codecs import Ragged, Tensor
from services.errors import InvalidInput

STEPS = ("standardize", "pca", "l2_normalize")
PREPROCESS_FILE = "preprocess.safetensors"


def parse_steps(raw: Any) -> list[dict[str, Any]]:
    """The request's steps in their stored form, ``[{"standardize": {}}, {"pca": 64}, ...]``; 422 for an
    unknown step or a bad argument."""
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise InvalidInput(f"preprocess is a list of steps ({', '.join(STEPS)}), not {type(raw).__name__}.")
    steps: list[dict[str, Any]] = []
    for item in raw:
        if isinstance(item, str):
            name, arg = item, None
        elif isinstance(item, dict) and len(item) == 1:
            name, arg = next(iter(item.items()))
        else:
            raise InvalidInput(
                f"preprocess step {item!r} is neither a name nor a one-key object like {{\"pca\": 64}}.", step=str(item)
            )
        if name not in STEPS:
            raise InvalidInput(f"unknown preprocess step {name!r}; the steps are: {', '.join(STEPS)}.", step=str(name))
        if name == "pca":
            if isinstance(arg, bool) or not isinstance(arg, int) or arg < 1:
                raise InvalidInput(
                    f"pca takes its number of components, a positive integer: {{\"pca\": 64}} (got {arg!r}).", step="pca"
                )
            steps.append({"pca": arg})
        else:
            if arg not in (None, {}):
                raise InvalidInput(f"preprocess step {name} takes no argument (got {arg!r}).", step=name)
            steps.append({name: {}})
    return steps


def _name(step: dict[str, Any]) -> str:
    return next(iter(step))


class Preprocessor:
    """Fitted steps; ``transform`` maps a tensor (dense rows or token sequences) through them."""

    def __init__(self, steps: list[dict[str, Any]]) -> None:
        self.steps = steps
        self.arrays: dict[str, np.ndarray] = {}

    def __bool__(self) -> bool:
        return bool(self.steps)

    @staticmethod
    def _vectors(tensor: Tensor) -> np.ndarray:
        return tensor.values if isinstance(tensor, Ragged) else np.asarray(tensor)

    def check(self, dim: int, rows: int) -> None:
        """Refuses steps that cannot fit features ``dim`` wide with ``rows`` vectors (before any fit)."""
        width = dim
        for step in self.steps:
            if _name(step) == "pca":
                wanted = step["pca"]
                if wanted > min(width, rows):
                    raise InvalidInput(
                        f"pca asks for {wanted} components, but the features it gets are {width} wide "
                        f"({rows} training vectors): at most {min(width, rows)}.",
                        step="pca", components=wanted, dim=width,
                    )
                width = wanted

    def output_dim(self, dim: int) -> int:
        """The width of the vectors the steps make from ``dim``-wide ones."""
        for step in self.steps:
            if _name(step) == "pca":
                dim = step["pca"]
        return dim

    def fit(self, tensor: Tensor) -> Preprocessor:
        x = self._vectors(tensor).astype(np.float64)
        self.check(x.shape[1], len(x))
        self.arrays = {}
        for i, step in enumerate(self.steps):
            name = _name(step)
            if name == "standardize":
                scaler = StandardScaler().fit(x)
                self.arrays[f"{i}.mean"], self.arrays[f"{i}.scale"] = scaler.mean_, scaler.scale_
            elif name == "pca":
                pca = PCA(n_components=step["pca"], svd_solver="full").fit(x)
                self.arrays[f"{i}.mean"], self.arrays[f"{i}.components"] = pca.mean_, pca.components_
            x = self._apply(i, name, x)
        return self

    def _apply(self, i: int, name: str, x: np.ndarray) -> np.ndarray:
        if name == "standardize":
            return (x - self.arrays[f"{i}.mean"]) / self.arrays[f"{i}.scale"]
        if name == "pca":
            return (x - self.arrays[f"{i}.mean"]) @ self.arrays[f"{i}.components"].T
        norms = np.linalg.norm(x, axis=1, keepdims=True)
        return x / np.where(norms > 0, norms, 1.0)

    def transform(self, tensor: Tensor) -> Tensor:
        if not self.steps:
            return tensor
        x = self._vectors(tensor).astype(np.float64)
        for i, step in enumerate(self.steps):
            x = self._apply(i, _name(step), x)
        x = x.astype(np.float32)
        return Ragged(x, tensor.lengths) if isinstance(tensor, Ragged) else x

    def save(self, folder: Path) -> None:
        if self.steps:
            save_file({k: np.ascontiguousarray(v) for k, v in self.arrays.items()} or {"none": np.zeros(1)},
                      str(folder / PREPROCESS_FILE))

    @classmethod
    def load(cls, steps: list[dict[str, Any]], folder: Path) -> Preprocessor:
        pre = cls(steps)
        if steps:
            pre.arrays = {k: v for k, v in load_file(str(folder / PREPROCESS_FILE)).items() if k != "none"}
            for i, step in enumerate(steps):
                needed = {"standardize": ("mean", "scale"), "pca": ("mean", "components")}.get(_name(step), ())
                missing = [f"{i}.{n}" for n in needed if f"{i}.{n}" not in pre.arrays]
                if missing:
                    raise ValueError(f"{PREPROCESS_FILE} lacks {', '.join(missing)}")
        return pre
