"""How the services log: ``*_LOG_FORMAT=text`` (the default) or ``json``, one object per line.

Every line carries the service, the request id (services.http.requestid) and, when tracing is on, the
trace and span ids; the access log adds method, path, route, status and duration, and any event its
own fields (``log.info("...", extra={...})``). uvicorn's own loggers go through the same handler.
"""

from __future__ import annotations

import json
import logging
import os
import sys
import time
from typing import Any

from services import tracing
from services.http.requestid import current_request_id

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s [%(request_id)s]: %(message)s"
# What a LogRecord has of its own: everything else on one came from ``extra`` and is written out.
_RECORD_FIELDS = frozenset(vars(logging.LogRecord("", 0, "", 0, "", (), None))) | {"message", "asctime", "taskName"}
_OURS = frozenset({"service", "request_id", "trace_id", "span_id"})


class ContextFilter(logging.Filter):
    """Stamps each record with the service, the request id and (tracing on) the trace ids."""

    def __init__(self, service: str) -> None:
        super().__init__()
        self.service = service

    def filter(self, record: logging.LogRecord) -> bool:
        record.service = self.service
        record.request_id = current_request_id() or "-"
        ids = tracing.current_ids()
        record.trace_id, record.span_id = ids if ids else (None, None)
        return True


class JSONFormatter(logging.Formatter):
    """One JSON object per line: time (UTC, ISO 8601), level, service, logger, message, request and
    trace ids, then the record's own fields."""

    def format(self, record: logging.LogRecord) -> str:
        seconds = int(record.created)
        line: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(seconds)) + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "service": getattr(record, "service", None),
            "logger": record.name,
            "message": record.getMessage(),
            "request_id": getattr(record, "request_id", None),
        }
        if getattr(record, "trace_id", None):
            line["trace_id"], line["span_id"] = record.trace_id, record.span_id  # type: ignore[attr-defined]
        for key, value in record.__dict__.items():
            if key not in _RECORD_FIELDS and key not in _OURS:
                line[key] = value
        if record.exc_info:
            line["exception"] = self.formatException(record.exc_info)
        return json.dumps(line, default=str, ensure_ascii=False)


def configure_logging(service: str, *, level: str = "info", fmt: str = "text") -> dict[str, Any]:
    """Sets up the root logger for a service process; returns what ``uvicorn.run`` needs to log the
    same way (its own config off, its access log replaced by ``seam.requests``). Call it first, before
    the app (and the model libraries) are imported."""
    if fmt == "json":  # progress bars (transformers loading weights) would be lines that are not JSON
        os.environ.setdefault("HF_HUB_DISABLE_PROGRESS_BARS", "1")
    handler = logging.StreamHandler(sys.stderr)
    handler.addFilter(ContextFilter(service))
    handler.setFormatter(JSONFormatter() if fmt == "json" else logging.Formatter(TEXT_FORMAT))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level.upper())
    return {"log_config": None, "log_level": level, "access_log": False}
