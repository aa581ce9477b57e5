"""Call seam's gateway from Python: ``Gateway`` (blocking) and ``AsyncGateway`` (asyncio), over httpx.

    from seam.client import Gateway, IncompatiblePipeline

    with Gateway("http://127.0.0.1:8000", api_key="...") as seam:
        result = seam.predict("support-intents", ["I was charged twice"])
        print(result.predictions[0].label)
        try:
            seam.predict("legacy-bert-base", ["hello"])
        except IncompatiblePipeline as refused:
            for m in refused.mismatches:
                print(m.field, m.expected, m.actual)

Results are typed (:class:`Prediction`, :class:`PipelineReport`, ...; each keeps the whole answer in
``raw``). Every error answer (RFC 9457 problem+json) raises a :class:`SeamError` subclass picked by the
problem's type, carrying its status, detail, fields and the ``request_id`` to quote in a bug report.
A 429 or 503 that says ``Retry-After`` is retried after that wait, ``retries`` times at most.
``train_file`` streams a CSV in chunks, never holding it whole, as ``seam train`` does.

Each call is written once (:class:`_Client`) and sent by one loop; the two clients differ only in
their transport: httpx's blocking client, or its asyncio one (whose calls are awaited).
"""

from __future__ import annotations

import asyncio
import itertools
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from seam.problems import (  # noqa: F401  (the client's public names)
    PROBLEM_BASE,
    REQUEST_ID_HEADER,
    BadRequest,
    BadUpstreamResponse,
    Conflict,
    Forbidden,
    IncompatiblePipeline,
    InvalidInput,
    Mismatch,
    NotFound,
    Overloaded,
    PayloadTooLarge,
    PipelineNotFound,
    SeamError,
    ServerError,
    Unauthorized,
    Unavailable,
    Unreachable,
    UnsupportedMediaType,
    UpstreamTimeout,
    error_of,
)
from seam.results import Link, PipelineReport, PredictResult, Prediction, TrainResult
from seam.upload import CHUNK_ROWS, TrainingFile

DEFAULT_URL = "http://127.0.0.1:8000"
DEFAULT_TIMEOUT_S = 300.0
DEFAULT_TRAIN_TIMEOUT_S = 3600.0


def _json(answer: Any) -> Any:
    return answer


@dataclass(frozen=True)
class Call:
    """One call of the gateway and how to read its answer, built once for both clients. ``body`` makes a
    fresh ``content`` per attempt (a streamed body cannot be sent twice); ``down`` is answered instead of
    raising when the gateway, or what it needs, is unavailable."""

    method: str
    path: str
    options: dict[str, Any] = field(default_factory=dict)
    read: Callable[[Any], Any] = _json
    body: Callable[[], Any] | None = None
    timeout: httpx.Timeout | None = None
    retry: bool = True
    down: bool | None = None


def _version(version: int | None) -> dict[str, int] | None:
    return {"version": version} if version is not None else None


def _file_fields(estimator: str | None, feature: str, params: dict[str, Any] | None, encoder: str | None = None,
                 retain_texts: bool | None = None) -> dict[str, Any]:
    """The train request's fields but texts and labels; those left unset are the gateway's defaults."""
    optional = {"estimator": estimator, "params": params or None, "encoder": encoder, "retain_texts": retain_texts}
    return {"feature": feature, **{k: v for k, v in optional.items() if v is not None}}


class _Client:
    """Every call, written once. Each returns what ``_run`` makes of its :class:`Call`: the answer itself
    (:class:`Gateway`), or an awaitable of it (:class:`AsyncGateway`); both send it through ``_send``."""

    def __init__(self, url: str = DEFAULT_URL, *, api_key: str | None = None, timeout: float = DEFAULT_TIMEOUT_S,
                 train_timeout: float = DEFAULT_TRAIN_TIMEOUT_S, connect_timeout: float = 10.0, retries: int = 3,
                 max_retry_wait: float = 30.0, headers: Mapping[str, str] | None = None) -> None:
        """``api_key`` goes as a bearer token; ``timeout`` bounds each call (``train_timeout`` a training);
        a 429/503 with ``Retry-After`` is retried ``retries`` times, each wait capped at ``max_retry_wait``."""
        if retries < 0 or max_retry_wait < 0:
            raise ValueError("retries and max_retry_wait must be >= 0")
        self.url = url.rstrip("/")
        self.timeout = httpx.Timeout(timeout, connect=connect_timeout)
        self.train_timeout = httpx.Timeout(train_timeout, connect=connect_timeout)
        self.retries = retries
        self.max_retry_wait = max_retry_wait
        self.headers = {**({"Authorization": f"Bearer {api_key}"} if api_key else {}), **(headers or {})}

    # -- sending: the one loop, over the transport each client gives -------------------------------------

    def _run(self, call: Call) -> Any:
        raise NotImplementedError

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        raise NotImplementedError

    async def _sleep(self, seconds: float) -> None:
        raise NotImplementedError

    def _stream(self, chunks: Iterator[bytes]) -> Any:
        return chunks

    async def _send(self, call: Call) -> Any:
        """The JSON of a success, read by ``call.read``; a typed :class:`SeamError` otherwise. A 429/503
        with ``Retry-After`` is sent again after that wait, ``retries`` times at most."""
        for attempt in itertools.count():
            options = dict(call.options, content=call.body()) if call.body is not None else call.options
            try:
                return call.read(_result(await self._answer(call, options)))
            except SeamError as error:
                retried = call.retry and error.status in (429, 503) and error.retry_after is not None
                if not retried or attempt >= self.retries:
                    if call.down is not None and isinstance(error, (Unavailable, Unreachable)):
                        return call.down
                    raise
                await self._sleep(min(error.retry_after, self.max_retry_wait))

    async def _answer(self, call: Call, options: dict[str, Any]) -> httpx.Response:
        try:
            return await self._request(call.method, call.path, timeout=call.timeout or self.timeout, **options)
        except httpx.TransportError as exc:
            raise Unreachable(self.url + call.path, exc) from exc

    # -- the calls ------------------------------------------------------------------------------------

    def request(self, method: str, path: str, *, body: Callable[[], Any] | None = None,
                timeout: httpx.Timeout | None = None, retry: bool = True, **kwargs: Any) -> Any:
        """Any call: the JSON of a success, a typed :class:`SeamError` otherwise. ``body`` makes a
        fresh ``content`` per attempt (a streamed body cannot be sent twice)."""
        return self._run(Call(method, path, kwargs, body=body, timeout=timeout, retry=retry))

    def predict(self, name: str, texts: list[str], *, version: int | None = None) -> PredictResult:
        return self._run(Call("POST", f"/v1/pipelines/{name}/predict", {"json": {"texts": list(texts)},
                              "params": _version(version)}, PredictResult.from_dict))

    def train(self, name: str, texts: list[str], labels: list[str], *, estimator: str | None = None,
              feature: str = "embedding", params: dict[str, Any] | None = None, encoder: str | None = None,
              retain_texts: bool | None = None) -> TrainResult:
        """``encoder``: the registered encoder to fit through (``encoders()``); default: the gateway's first."""
        body = {"texts": list(texts), "labels": list(labels), **_file_fields(estimator, feature, params, encoder, retain_texts)}
        return self._run(Call("POST", f"/v1/pipelines/{name}/train", {"json": body}, TrainResult.from_dict,
                              timeout=self.train_timeout))

    def train_file(self, name: str, path: str | Path | TrainingFile, *, text_column: str = "text",
                   label_column: str = "label", estimator: str | None = None, feature: str = "embedding",
                   params: dict[str, Any] | None = None, chunk_rows: int = CHUNK_ROWS,
                   encoder: str | None = None, retain_texts: bool | None = None) -> TrainResult:
        """Streams a CSV file's rows in chunks (raises ``seam.upload.CSVProblem`` for a bad file). Given a
        path, a retry reads it again; a :class:`TrainingFile` (to watch its progress) is sent once."""
        fields = _file_fields(estimator, feature, params, encoder, retain_texts)
        files = _training_files(path, text_column, label_column, chunk_rows)
        return self._run(Call(
            "POST", f"/v1/pipelines/{name}/train", {"headers": {"Content-Type": "application/json"}},
            TrainResult.from_dict, body=lambda: self._stream(next(files).body(fields)), timeout=self.train_timeout,
            retry=not isinstance(path, TrainingFile)))

    def evaluate(self, name: str, texts: list[str], *, labels: list[str] | None = None,
                 targets: list[float] | None = None, version: int | None = None) -> dict[str, Any]:
        """Scores a version on labelled texts (a classifier) or numeric targets (a regressor): the gateway's
        metrics (accuracy, macro-F1, per class, confusion matrix, log-loss, ECE; or R², MAE, RMSE)."""
        truth = {"labels": list(labels)} if labels is not None else {"targets": list(targets or [])}
        return self._run(Call("POST", f"/v1/pipelines/{name}/evaluate", {"json": {"texts": list(texts), **truth},
                              "params": _version(version)}, timeout=self.train_timeout))

    def refit(self, name: str, encoder: str, *, version: int | None = None, promote: bool = False,
              reuse: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A new version (a chain: one per link, bottom up) from the kept texts through ``encoder``,
        compared with the old; ``promote`` moves ``production`` once every new version passed its check."""
        body = {"encoder": encoder, "promote": promote, **(_version(version) or {}), **({"reuse": reuse} if reuse else {})}
        return self._run(Call("POST", f"/v1/pipelines/{name}/refit", {"json": body}, timeout=self.train_timeout))

    def compare(self, name: str, texts: list[str], a: int | str, b: int | str, *,
                labels: list[str] | None = None) -> dict[str, Any]:
        """Two versions or aliases on the same texts, each on its own encoder: labels, agreement, and with
        ``labels`` the accuracy and macro-F1 of each."""
        body = {"texts": list(texts), "a": a, "b": b, **({"labels": list(labels)} if labels is not None else {})}
        return self._run(Call("POST", f"/v1/pipelines/{name}/compare", {"json": body}, timeout=self.train_timeout))

    def aliases(self, name: str) -> dict[str, int]:
        return self._run(Call("GET", f"/v1/pipelines/{name}/aliases", read=lambda answer: dict(answer["aliases"])))

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Moves ``alias`` (``production``: what a plain predict serves) to ``version``; 409 if no encoder fits it."""
        return self._run(Call("PUT", f"/v1/pipelines/{name}/aliases/{alias}", {"json": {"version": version}}))

    def delete_alias(self, name: str, alias: str) -> None:
        return self._run(Call("DELETE", f"/v1/pipelines/{name}/aliases/{alias}", read=lambda answer: None))

    def pipelines(self) -> list[PipelineReport]:
        return self._run(Call("GET", "/v1/pipelines",
                              read=lambda answer: [PipelineReport.from_dict(p) for p in answer["pipelines"]]))

    def pipeline(self, name: str) -> PipelineReport:
        """The pipeline's chain and compatibility report (an incompatible one is reported, not raised)."""
        return self._run(Call("GET", f"/v1/pipelines/{name}", read=PipelineReport.from_dict))

    def encoders(self) -> list[dict[str, Any]]:
        """The gateway's registered encoders: name, url, ready, model, outputs (with their contracts)."""
        return self._run(Call("GET", "/v1/encoders", read=lambda answer: list(answer["encoders"])))

    def ready(self) -> bool:
        """Whether the gateway is ready; False while it, or what it needs, is down."""
        return self._run(Call("GET", "/readyz", read=lambda answer: True, down=False))


def _result(response: httpx.Response) -> Any:
    if response.status_code >= 400:
        raise error_of(response)
    try:
        return response.json() if response.content else None
    except ValueError:
        raise SeamError(response.status_code, {"title": "Not JSON",
                        "detail": f"answered with a body that is not JSON: {response.text[:200]}"},
                        request_id=response.headers.get(REQUEST_ID_HEADER)) from None


class Gateway(_Client):
    """A blocking client of the gateway; use it as a context manager (or call :meth:`close`)."""

    def __init__(self, url: str = DEFAULT_URL, *, transport: httpx.BaseTransport | None = None, **options: Any) -> None:
        super().__init__(url, **options)
        self._http = httpx.Client(base_url=self.url, headers=self.headers, timeout=self.timeout, transport=transport)

    def __enter__(self) -> Gateway:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def close(self) -> None:
        self._http.close()

    def _run(self, call: Call) -> Any:
        # The blocking transport never suspends the coroutine: it runs to its end in one step, no event loop.
        sending = self._send(call)
        try:
            sending.send(None)
        except StopIteration as done:
            return done.value
        sending.close()
        raise RuntimeError("the blocking client's call waited on an event loop")

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        return self._http.request(method, path, **options)

    async def _sleep(self, seconds: float) -> None:
        time.sleep(seconds)


class AsyncGateway(_Client):
    """The same client for asyncio: ``async with AsyncGateway(url) as seam: await seam.predict(...)``."""

    def __init__(self, url: str = DEFAULT_URL, *, transport: httpx.AsyncBaseTransport | None = None,
                 **options: Any) -> None:
        super().__init__(url, **options)
        self._http = httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=self.timeout, transport=transport)

    async def __aenter__(self) -> AsyncGateway:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        await self.aclose()

    async def aclose(self) -> None:
        await self._http.aclose()

    def _run(self, call: Call) -> Any:
        return self._send(call)  # awaited by the caller

    async def _request(self, method: str, path: str, **options: Any) -> httpx.Response:
        return await self._http.request(method, path, **options)

    async def _sleep(self, seconds: float) -> None:
        await asyncio.sleep(seconds)

    def _stream(self, chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
        return _chunks(chunks)


def _training_files(path: str | Path | TrainingFile, text_column: str, label_column: str,
                    chunk_rows: int) -> Iterator[TrainingFile]:
    """The file to send on each attempt: opened afresh from a path, or the one given, once."""
    if isinstance(path, TrainingFile):
        yield path  # sent once: request(retry=False)
        return
    while True:
        yield TrainingFile(Path(path), text_column, label_column, chunk_rows=chunk_rows)


async def _chunks(chunks: Iterator[bytes]) -> AsyncIterator[bytes]:
    """A file's chunks for the async client, each read in a worker thread (the loop never reads disk)."""
    done = object()
    while (chunk := await asyncio.to_thread(next, chunks, done)) is not done:
        yield chunk  # type: ignore[misc]


__all__ = [
    "AsyncGateway", "BadRequest", "BadUpstreamResponse", "Conflict", "Forbidden", "Gateway", "IncompatiblePipeline",
    "InvalidInput", "Link", "Mismatch", "NotFound", "Overloaded", "PayloadTooLarge", "PipelineNotFound",
    "PipelineReport", "PredictResult", "Prediction", "SeamError", "ServerError", "TrainResult", "Unauthorized",
    "Unavailable", "Unreachable", "UnsupportedMediaType", "UpstreamTimeout", "error_of",
]
