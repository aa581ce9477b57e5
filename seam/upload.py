"""A training CSV streamed to the gateway in chunks of rows, with a progress bar on stderr.

The file is never held whole: its texts go out as they are read, in the JSON body of
``POST /v1/pipelines/{name}/train`` (sent chunked), and only the labels wait for the end of the file
(the body's last field). The bar follows the bytes read; once the file is sent, a timer shows how
long the gateway has been encoding and fitting.
"""

from __future__ import annotations

import csv
import json
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

CHUNK_ROWS = 1000


class CSVProblem(ValueError):
    """The file cannot be used as training data; the message names the file, line and column."""


@dataclass
class Counter:
    """What has been read so far: shared between the sending thread and the one drawing the bar."""

    bytes_read: int = 0
    rows: int = 0
    done: bool = False
    line_of_row: list[int] = field(default_factory=list)  # CSV line number of each data row


class TrainingFile:
    """A CSV file with a text and a label column; :meth:`body` yields the train request's JSON in chunks."""

    def __init__(self, path: Path, text_column: str, label_column: str, *, chunk_rows: int = CHUNK_ROWS) -> None:
        self.path = path
        self.text_column, self.label_column = text_column, label_column
        self.chunk_rows = chunk_rows
        self.counter = Counter()
        try:
            self.size = max(path.stat().st_size, 1)
            self._raw = path.open("rb")
        except OSError as exc:
            raise CSVProblem(f"cannot read {path}: {exc.strerror or exc}") from exc
        self._reader = csv.reader(self._lines())
        try:
            header = next(self._reader)
        except StopIteration:
            self.close()
            raise CSVProblem(f"{path} is empty; it needs a header line with {text_column!r} and {label_column!r}") from None
        except (csv.Error, UnicodeDecodeError) as exc:
            self.close()
            raise CSVProblem(f"{path} line 1: {exc}") from exc
        missing = [c for c in (text_column, label_column) if c not in header]
        if missing:
            self.close()
            raise CSVProblem(
                f"{path} has no column {', '.join(map(repr, missing))}; its columns are {header} "
                "(choose with --text-column and --label-column)"
            )
        self._text, self._label = header.index(text_column), header.index(label_column)

    def _lines(self) -> Iterator[str]:
        for number, line in enumerate(self._raw):
            self.counter.bytes_read += len(line)
            text = line.decode("utf-8")  # a line split at b"\n" never cuts a UTF-8 character
            yield text.removeprefix("\ufeff") if number == 0 else text

    def rows(self) -> Iterator[tuple[str, str]]:
        try:
            for row in self._reader:
                if not row:
                    continue  # a blank line
                line = self._reader.line_num
                if len(row) <= max(self._text, self._label):
                    raise CSVProblem(f"{self.path} line {line}: {len(row)} fields, fewer than the header's")
                self.counter.rows += 1
                self.counter.line_of_row.append(line)
                yield row[self._text], row[self._label]
        except UnicodeDecodeError as exc:
            raise CSVProblem(f"{self.path} near line {self._reader.line_num + 1}: not UTF-8 text ({exc.reason})") from exc
        except csv.Error as exc:
            raise CSVProblem(f"{self.path} line {self._reader.line_num}: {exc}") from exc
        finally:
            self.counter.done = True
            self.close()

    def body(self, fields: dict[str, Any]) -> Iterator[bytes]:
        """``{fields..., "texts": [...], "labels": [...]}``, texts streamed chunk by chunk."""
        head = json.dumps(fields)[:-1]
        yield (head + (", " if fields else "") + '"texts": [').encode()
        labels: list[str] = []
        chunk: list[str] = []
        first = True
        for text, label in self.rows():
            chunk.append(text)
            labels.append(label)
            if len(chunk) >= self.chunk_rows:
                yield self._encode_chunk(chunk, first)
                first, chunk = False, []
        if chunk:
            yield self._encode_chunk(chunk, first)
        yield ('], "labels": ' + json.dumps(labels) + "}").encode()

    @staticmethod
    def _encode_chunk(texts: list[str], first: bool) -> bytes:
        return (("" if first else ", ") + json.dumps(texts)[1:-1]).encode()

    def line_of(self, index: int) -> int | None:
        rows = self.counter.line_of_row
        return rows[index] if 0 <= index < len(rows) else None

    def close(self) -> None:
        self._raw.close()


class ProgressBar:
    """Redraws one stderr line from a :class:`Counter` until stopped (a thread of its own)."""

    def __init__(self, label: str, counter: Counter, total_bytes: int, *, stream: TextIO | None = None,
                 interval: float | None = None) -> None:
        self.label, self.counter, self.total = label, counter, total_bytes
        self.stream = stream or sys.stderr
        # A terminal redraws in place; a log file gets a line every few seconds, not ten a second.
        self.interval = interval or (0.1 if self.stream.isatty() else 5.0)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="seam-progress", daemon=True)
        self._started = time.monotonic()
        self._sent_at: float | None = None

    def __enter__(self) -> ProgressBar:
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self.draw()
        self.stream.write("\n")
        self.stream.flush()

    def _run(self) -> None:
        while not self._stop.wait(self.interval):
            self.draw()

    def line(self) -> str:
        c = self.counter
        fraction = 1.0 if c.done else min(c.bytes_read / self.total, 1.0)
        width = 30
        filled = int(width * fraction)
        bar = f"[{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%} {c.rows:,} rows"
        if not c.done:
            return f"{self.label} {bar}"
        if self._sent_at is None:
            self._sent_at = time.monotonic()
        return f"{self.label} {bar} sent; encoding and fitting {time.monotonic() - self._sent_at:4.0f}s"

    def draw(self) -> None:
        self.stream.write("\r" + self.line())
        self.stream.flush()
