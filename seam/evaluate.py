"""``seam evaluate NAME FILE.csv [--version N] [--plot out.png]``: a pipeline's figures on a labelled
file, as a table, and optionally one PNG with the confusion matrix and the reliability diagram.

matplotlib is imported only for ``--plot`` (it is in the ``bench`` extra, not a runtime dependency)."""

from __future__ import annotations

from pathlib import Path
from typing import Any


class EvaluateError(Exception):
    """A problem the command reports in one line."""


def targets_of(values: list[str], column: str) -> list[float]:
    out = []
    for i, value in enumerate(values, start=2):  # row 1 is the header
        try:
            out.append(float(value))
        except ValueError as exc:
            raise EvaluateError(f"row {i}: {column} {value!r} is not a number") from exc
    return out


def table_lines(result: dict[str, Any]) -> list[str]:
    """The figures as text: the overall ones, then per class (a classifier), then the confusion matrix."""
    m = result["metrics"]
    lines = [f"pipeline {result['name']} v{result['version']} ({result['task']}), {m['n_samples']} texts"]
    if result["task"] == "regression":
        lines += [f"  R²    {m['r2']:.4f}", f"  MAE   {m['mae']:.4f}", f"  RMSE  {m['rmse']:.4f}"]
    else:
        lines += [f"  accuracy  {m['accuracy']:.4f}", f"  macro-F1  {m['macro_f1']:.4f}",
                  f"  log-loss  {m['log_loss']:.4f}", f"  ECE       {m['ece']:.4f}", ""]
        classes = m["classes"]
        width = max(len(c) for c in [*classes, "class"])
        lines.append(f"  {'class'.ljust(width)}  precision  recall  f1      support")
        for c in classes:
            row = m["per_class"][c]
            lines.append(f"  {c.ljust(width)}  {row['precision']:.4f}     {row['recall']:.4f}  {row['f1']:.4f}  {row['support']}")
        lines += ["", "  confusion matrix (rows: true, columns: predicted)",
                  "  " + " " * width + "  " + "  ".join(c[:8].rjust(8) for c in classes)]
        for c, counts in zip(classes, m["confusion_matrix"]):
            lines.append(f"  {c.ljust(width)}  " + "  ".join(str(n).rjust(8) for n in counts))
    ood = result.get("ood")
    if ood:
        lines += ["", f"  out of distribution: {ood['out_of_distribution_share']:.1%} of the texts, mean score {ood['mean_score']:.3f}"]
    return lines


def plot(result: dict[str, Any], out: Path) -> None:
    """One PNG: the confusion matrix and the reliability diagram (a regressor: neither applies)."""
    if result["task"] == "regression":
        raise EvaluateError("--plot draws a confusion matrix and a reliability diagram: a regressor has neither")
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError as exc:
        raise EvaluateError("--plot needs matplotlib: install the bench extra (pip install 'seam[bench]')") from exc
    m = result["metrics"]
    classes = m["classes"]
    figure, (left, right) = plt.subplots(1, 2, figsize=(12, 5))
    left.imshow(m["confusion_matrix"], cmap="Blues")
    left.set_xticks(range(len(classes)), classes, rotation=45, ha="right")
    left.set_yticks(range(len(classes)), classes)
    left.set_xlabel("predicted")
    left.set_ylabel("true")
    left.set_title(f"confusion matrix (accuracy {m['accuracy']:.3f})")
    for i, counts in enumerate(m["confusion_matrix"]):
        for j, n in enumerate(counts):
            left.text(j, i, str(n), ha="center", va="center")
    bins = m["reliability"]
    right.plot([0, 1], [0, 1], linestyle="--", color="grey", label="perfectly calibrated")
    right.bar([(b["low"] + b["high"]) / 2 for b in bins], [b["accuracy"] for b in bins], width=0.09, alpha=0.7,
              label="accuracy per confidence bin")
    right.plot([b["confidence"] for b in bins], [b["accuracy"] for b in bins], marker="o", color="black")
    right.set_xlim(0, 1)
    right.set_ylim(0, 1)
    right.set_xlabel("confidence")
    right.set_ylabel("accuracy")
    right.set_title(f"reliability (ECE {m['ece']:.3f})")
    right.legend(loc="upper left")
    figure.tight_layout()
    figure.savefig(out)
    plt.close(figure)
