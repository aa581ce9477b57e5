"""What every `seam` command shares: the client each calls the gateway through, errors printed as the
problem's detail (never a traceback), the sample data, and plain-text tables."""

from __future__ import annotations

import json
from importlib import resources
from pathlib import Path
from typing import Any

from seam.client import Gateway, SeamError, Unreachable
from seam.upload import CSVProblem, TrainingFile


class CLIError(Exception):
    pass


def sample_data() -> Path:
    return Path(str(resources.files("seam") / "data" / "support_intents.csv"))


def read_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """All rows at once (the small sample data); ``seam train`` streams instead."""
    try:
        rows = list(TrainingFile(path, text_column, label_column).rows())
    except CSVProblem as exc:
        raise CLIError(str(exc)) from exc
    return [text for text, _ in rows], [label for _, label in rows]


def gateway_client(gateway: str, api_key: str | None = None, **options: Any) -> Gateway:
    """Every HTTP call the CLI makes goes through :mod:`seam.client`: one HTTP path, not two."""
    return Gateway(gateway, api_key=api_key, **options)


def problem_lines(error: SeamError, *, training: TrainingFile | None = None) -> str:
    """The problem's status, title and detail, the CSV line of a refused row, then every mismatch."""
    if isinstance(error, Unreachable):
        return f"{error.detail}. Is the stack running (`make run`)?"
    lines = [str(error)]
    index = error.problem.get("index")
    if training is not None and isinstance(index, int) and training.line_of(index) is not None:
        lines.append(f"  (row {index} is line {training.line_of(index)} of {training.path})")
    lines += [format_mismatch(m) for m in error.problem.get("mismatches", []) if isinstance(m, dict)]
    return "\n".join(lines)


def format_mismatch(m: dict[str, Any]) -> str:
    return (f"  - {m.get('field')}: expected {short(m.get('expected'))}, got {short(m.get('actual'))}"
            f" ({m.get('message')}; producer: {m.get('producer')}; consumer: {m.get('consumer')})")


def short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]
