"""Torch heads over variable-length token sequences: attention pooling and a bidirectional LSTM.

- attention pooling: score = Linear(dim, 1) over each token vector, softmax over the real tokens
  (padding masked out with -inf), the weighted sum of the token vectors, then Linear(dim, n_classes);
- LSTM: a bidirectional LSTM over the packed sequences (padding never enters it), the mean of its
  outputs over the real tokens, then Linear(2 * hidden_size, n_classes).

Trained on the CPU with a fixed seed, Adam, and early stopping on a stratified held-out split.
Persisted as safetensors (the weights) plus a JSON config (format, dim, classes, hyperparameters):
no pickle anywhere.
"""

from __future__ import annotations

import copy
import json
import math
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import torch
from pydantic import BaseModel, ConfigDict, Field
from safetensors.torch import load_file, save_file
from sklearn.model_selection import train_test_split
from torch import nn

from services.codecs import Ragged

WEIGHTS_FILE = "head.safetensors"
# The head is tiny: intra-op parallelism costs more than it gains (a fit on 2 threads is many times
# slower than on 1). Overridden by CLASSIFIER_TORCH_THREADS.
_intra_op_threads: int | None = 1
CONFIG_FILE = "head.json"
_PREDICT_CHUNK = 256  # rows padded together at prediction time


class HeadParams(BaseModel):
    """Hyperparameters of :class:`AttentionPoolingClassifier` (the ``params`` a fit may set)."""

    # strict: a boolean is not a number (``max_epochs: true`` is refused, not read as 1)
    model_config = ConfigDict(extra="forbid", frozen=True, strict=True)

    learning_rate: float = Field(1e-3, gt=0, le=1)
    weight_decay: float = Field(1e-4, ge=0, le=1)
    dropout: float = Field(0.1, ge=0, lt=1)
    batch_size: int = Field(32, gt=0, le=4096)
    max_epochs: int = Field(200, gt=0, le=2000)
    patience: int = Field(10, gt=0, le=500, description="Epochs without a better held-out loss before stopping.")
    validation_fraction: float = Field(0.15, gt=0, lt=0.5)
    seed: int = Field(0, ge=0, le=2**32 - 1)


class LstmParams(HeadParams):
    """Hyperparameters of :class:`LstmClassifier`: the head's, and the LSTM's width."""

    hidden_size: int = Field(64, gt=0, le=1024, description="Units per direction of the bidirectional LSTM.")


class AttentionPooling(nn.Module):
    def __init__(self, dim: int, n_classes: int, dropout: float = 0.0) -> None:
        super().__init__()
        self.score = nn.Linear(dim, 1)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(dim, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` (batch, length, dim) padded token vectors, ``mask`` (batch, length) true on real tokens."""
        scores = self.score(x).squeeze(-1).masked_fill(~mask, float("-inf"))
        weights = torch.softmax(scores, dim=1)
        pooled = torch.bmm(weights.unsqueeze(1), x).squeeze(1)
        return self.out(self.dropout(pooled))


class LstmPooling(nn.Module):
    def __init__(self, dim: int, n_classes: int, dropout: float = 0.0, hidden_size: int = 64) -> None:
        super().__init__()
        self.lstm = nn.LSTM(dim, hidden_size, batch_first=True, bidirectional=True)
        self.dropout = nn.Dropout(dropout)
        self.out = nn.Linear(2 * hidden_size, n_classes)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        lengths = mask.sum(dim=1)
        packed = nn.utils.rnn.pack_padded_sequence(x, lengths.clamp(min=1).cpu(), batch_first=True, enforce_sorted=False)
        output, _ = self.lstm(packed)
        padded, _ = nn.utils.rnn.pad_packed_sequence(output, batch_first=True, total_length=x.shape[1])
        weights = mask.unsqueeze(-1).to(padded.dtype)
        pooled = (padded * weights).sum(dim=1) / weights.sum(dim=1).clamp(min=1.0)
        return self.out(self.dropout(pooled))


def use_threads(threads: int | None) -> None:
    """Intra-op threads for every head's fit and prediction; None leaves torch's own setting."""
    global _intra_op_threads
    _intra_op_threads = threads


@contextmanager
def _threads() -> Iterator[None]:
    # With torch's OpenMP backend the thread count is per calling thread: set it here, in the thread
    # that computes (a worker thread), and put it back for whatever else that thread runs next.
    wanted, previous = _intra_op_threads, torch.get_num_threads()
    if wanted is None or wanted == previous:
        yield
        return
    torch.set_num_threads(wanted)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def _pad(rows: list[np.ndarray], dim: int) -> tuple[torch.Tensor, torch.Tensor]:
    longest = max(len(r) for r in rows)
    x = np.zeros((len(rows), longest, dim), dtype=np.float32)
    mask = np.zeros((len(rows), longest), dtype=bool)
    for i, r in enumerate(rows):
        x[i, : len(r)] = r
        mask[i, : len(r)] = True
    return torch.from_numpy(x), torch.from_numpy(mask)


class SequenceHead:
    """Fit / predict_proba over :class:`~services.codecs.Ragged` token sequences, like an estimator.
    Subclasses name their format, their parameters and their module."""

    FORMAT = ""
    KIND = ""  # in messages: "not an attention-pooling head config"
    PARAMS: type[HeadParams] = HeadParams

    def __init__(self, params: HeadParams | None = None) -> None:
        self.params = params or self.PARAMS()
        self.classes_: np.ndarray | None = None
        self.dim: int | None = None
        self.module: nn.Module | None = None
        self.fit_report: dict[str, Any] = {}

    def _module(self, dim: int, n_classes: int) -> nn.Module:
        raise NotImplementedError

    # -- training -------------------------------------------------------------------------------

    def fit(self, X: Ragged, y: np.ndarray) -> SequenceHead:
        with _threads():
            return self._fit(X, y)

    def _fit(self, X: Ragged, y: np.ndarray) -> SequenceHead:
        p = self.params
        classes, targets = np.unique(np.asarray(y), return_inverse=True)
        rows = X.rows()
        self.classes_, self.dim = classes, X.dim
        train_idx, val_idx = self._split(targets)
        y_all = torch.from_numpy(targets.astype(np.int64))
        early_stopping = len(val_idx) > 0

        def held_out_loss(module: nn.Module) -> float:
            total = 0.0
            for start in range(0, len(val_idx), _PREDICT_CHUNK):  # padded in chunks, never all at once
                chunk = val_idx[start : start + _PREDICT_CHUNK]
                logits = module(*_pad([rows[i] for i in chunk], X.dim))
                total += float(nn.functional.cross_entropy(logits, y_all[torch.from_numpy(chunk)], reduction="sum"))
            return total / len(val_idx)

        # fork_rng keeps the process-wide generator untouched: the fixed seed only governs this fit.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(p.seed)
            module = self._module(X.dim, len(classes))
            optimiser = torch.optim.Adam(module.parameters(), lr=p.learning_rate, weight_decay=p.weight_decay)
            order = torch.Generator().manual_seed(p.seed)
            best_loss, best_state, best_epoch, stale, epoch = math.inf, None, 0, 0, 0
            for epoch in range(1, p.max_epochs + 1):
                module.train()
                perm = train_idx[torch.randperm(len(train_idx), generator=order).numpy()]
                for start in range(0, len(perm), p.batch_size):
                    batch = perm[start : start + p.batch_size]
                    x, mask = _pad([rows[i] for i in batch], X.dim)
                    optimiser.zero_grad()
                    nn.functional.cross_entropy(module(x, mask), y_all[torch.from_numpy(batch)]).backward()
                    optimiser.step()
                if not early_stopping:
                    continue
                module.eval()
                with torch.inference_mode():
                    loss = held_out_loss(module)
                if loss < best_loss - 1e-6:
                    best_loss, best_state, best_epoch, stale = loss, copy.deepcopy(module.state_dict()), epoch, 0
                else:
                    stale += 1
                    if stale >= p.patience:
                        break
            if best_state is not None:
                module.load_state_dict(best_state)
        module.eval()
        self.module = module
        report: dict[str, Any] = {"epochs": epoch, "early_stopping": early_stopping}
        if early_stopping:
            held_out = self.predict_proba(Ragged.from_rows([rows[i] for i in val_idx], X.dim)).argmax(axis=1)
            report.update(
                best_epoch=best_epoch,
                holdout_loss=round(best_loss, 6),
                holdout_accuracy=float((held_out == targets[val_idx]).mean()),
                holdout_size=int(len(val_idx)),
            )
        else:
            report["early_stopping_skipped_reason"] = "too few examples per class for a stratified held-out split"
        self.fit_report = report
        return self

    def _split(self, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Stratified held-out split for early stopping; none when a class has fewer than 2 rows."""
        everything = np.arange(len(targets))
        n_classes = int(targets.max()) + 1
        n_val = max(n_classes, int(round(self.params.validation_fraction * len(targets))))
        if np.bincount(targets).min() < 2 or len(targets) - n_val < n_classes:
            return everything, np.array([], dtype=np.int64)
        train, val = train_test_split(
            everything, test_size=n_val, stratify=targets, random_state=self.params.seed
        )
        return np.sort(train), np.sort(val)

    # -- inference ------------------------------------------------------------------------------

    def predict_proba(self, X: Ragged) -> np.ndarray:
        if self.module is None:
            raise RuntimeError("the head is not fitted")
        rows = X.rows()
        out = []
        with _threads(), torch.inference_mode():
            for start in range(0, len(rows), _PREDICT_CHUNK):
                x, mask = _pad(rows[start : start + _PREDICT_CHUNK], X.dim)
                out.append(torch.softmax(self.module(x, mask).double(), dim=1).numpy())
        return np.concatenate(out) if out else np.zeros((0, len(self.classes_)), dtype=np.float64)

    # -- persistence ----------------------------------------------------------------------------

    def save(self, folder: Path) -> None:
        if self.module is None:
            raise RuntimeError("the head is not fitted")
        state = {k: v.detach().contiguous() for k, v in self.module.state_dict().items()}
        save_file(state, str(folder / WEIGHTS_FILE), metadata={"format": self.FORMAT})
        config = {
            "format": self.FORMAT,
            "dim": self.dim,
            "classes": [str(c) for c in self.classes_],
            "hyperparameters": self.params.model_dump(),
        }
        (folder / CONFIG_FILE).write_text(json.dumps(config, indent=2))

    @classmethod
    def load(cls, folder: Path) -> SequenceHead:
        """Rebuilds a head from its folder; raises ``ValueError`` for anything that is not one."""
        config = json.loads((folder / CONFIG_FILE).read_text())
        if not isinstance(config, dict) or config.get("format") != cls.FORMAT:
            raise ValueError(f"{CONFIG_FILE} is not {cls.KIND} head config ({cls.FORMAT})")
        dim, classes = int(config["dim"]), [str(c) for c in config["classes"]]
        head = cls(cls.PARAMS(**config["hyperparameters"]))
        module = head._module(dim, len(classes))
        state = load_file(str(folder / WEIGHTS_FILE))
        expected = {k: tuple(v.shape) for k, v in module.state_dict().items()}
        found = {k: tuple(v.shape) for k, v in state.items()}
        if found != expected:
            raise ValueError(f"weights do not fit a {dim}-wide head over {len(classes)} classes: {found}")
        module.load_state_dict(state)
        module.eval()
        head.module, head.dim, head.classes_ = module, dim, np.array(classes)
        return head


class AttentionPoolingClassifier(SequenceHead):
    FORMAT = "seam.attention-pooling.v1"
    KIND = "an attention-pooling"
    PARAMS = HeadParams

    def _module(self, dim: int, n_classes: int) -> nn.Module:
        return AttentionPooling(dim, n_classes, self.params.dropout)


class LstmClassifier(SequenceHead):
    FORMAT = "seam.lstm.v1"
    KIND = "an LSTM"
    PARAMS = LstmParams

    def _module(self, dim: int, n_classes: int) -> nn.Module:
        assert isinstance(self.params, LstmParams)
        return LstmPooling(dim, n_classes, self.params.dropout, self.params.hidden_size)
