"""The same generated sentences for every row of the benchmark, and process memory readings."""

from __future__ import annotations

import csv
import os
import random
from importlib import resources

SUBJECTS = ["my parcel", "the invoice", "my account", "the refund", "this subscription", "the delivery",
            "my password", "the payment", "your app", "the order I placed"]
PROBLEMS = ["has not arrived although it was promised for last Monday", "shows a charge I do not recognise at all",
            "keeps failing when I try to log in from my phone", "was cancelled without any explanation from you",
            "is still pending after more than two weeks of waiting", "was sent to the wrong address in another city"]
ASKS = ["Can you please look into it?", "What should I do now?", "I would like an answer today.",
        "Please help me sort this out.", "Is there anything you can do?"]


def sentences(n: int, seed: int = 0) -> list[str]:
    """Support-style sentences of about 20-25 tokens."""
    rng = random.Random(seed)
    return [f"{rng.choice(SUBJECTS).capitalize()} {rng.choice(PROBLEMS)}. {rng.choice(ASKS)}" for _ in range(n)]


def training_data() -> tuple[list[str], list[str]]:
    path = resources.files("seam") / "data" / "support_intents.csv"
    with path.open(newline="", encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh))
    return [r["text"] for r in rows], [r["label"] for r in rows]


def _status_kb(pid: int, field: str) -> float:
    with open(f"/proc/{pid}/status") as fh:
        for line in fh:
            if line.startswith(field + ":"):
                return float(line.split()[1])
    return float("nan")


def peak_rss_mb(pid: int | None = None) -> float:
    return _status_kb(pid or os.getpid(), "VmHWM") / 1024


def rss_mb(pid: int | None = None) -> float:
    return _status_kb(pid or os.getpid(), "VmRSS") / 1024
