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
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
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

# --- the clients ---------------------------------------------------------------------------------------

def _file_fields(estimator: str | None, feature: str, params: dict[str, Any] | None, encoder: str | None = None,
                 retain_texts: bool | None = None) -> dict[str, Any]:
    """The train request's fields but texts and labels; those left unset are the gateway's defaults."""
    optional = {"estimator": estimator, "params": params or None, "encoder": encoder, "retain_texts": retain_texts}
    return {"feature": feature, **{k: v for k, v in optional.items() if v is not None}}


def _train_body(texts: list[str], labels: list[str], estimator: str | None, feature: str,
                params: dict[str, Any] | None, encoder: str | None = None, retain_texts: bool | None = None) -> dict[str, Any]:
    return {"texts": list(texts), "labels": list(labels), **_file_fields(estimator, feature, params, encoder, retain_texts)}


def _evaluate_body(texts: list[str], labels: list[str] | None, targets: list[float] | None) -> dict[str, Any]:
    truth = {"labels": list(labels)} if labels is not None else {"targets": list(targets or [])}
    return {"texts": list(texts), **truth}


def _refit_body(encoder: str, version: int | None, promote: bool, reuse: list[dict[str, Any]] | None) -> dict[str, Any]:
    body: dict[str, Any] = {"encoder": encoder, "promote": promote}
    if version is not None:
        body["version"] = version
    if reuse:
        body["reuse"] = reuse
    return body


def _compare_body(texts: list[str], a: int | str, b: int | str, labels: list[str] | None) -> dict[str, Any]:
    return {"texts": list(texts), "a": a, "b": b, **({"labels": list(labels)} if labels is not None else {})}


class _Base:
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

    def _wait(self, error: SeamError, attempt: int, retry: bool) -> float | None:
        """Seconds to wait before retrying ``error``, or None: raise it."""
        if not retry or error.status not in (429, 503) or error.retry_after is None or attempt >= self.retries:
            return None
        return min(error.retry_after, self.max_retry_wait)

    @staticmethod
    def _result(response: httpx.Response) -> Any:
        if response.status_code >= 400:
            raise error_of(response)
        try:
            return response.json() if response.content else None
        except ValueError:
            raise SeamError(response.status_code, {"title": "Not JSON",
                            "detail": f"answered with a body that is not JSON: {response.text[:200]}"},
                            request_id=response.headers.get(REQUEST_ID_HEADER)) from None


class Gateway(_Base):
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

    def request(self, method: str, path: str, *, body: Callable[[], Any] | None = None,
                timeout: httpx.Timeout | None = None, retry: bool = True, **kwargs: Any) -> Any:
        """Any call: the JSON of a success, a typed :class:`SeamError` otherwise. ``body`` makes a
        fresh ``content`` per attempt (a streamed body cannot be sent twice)."""
        attempt = 0
        while True:
            if body is not None:
                kwargs["content"] = body()
            try:
                response = self._http.request(method, path, timeout=timeout or self.timeout, **kwargs)
            except httpx.TransportError as exc:
                raise Unreachable(self.url + path, exc) from exc
            try:
                return self._result(response)
            except SeamError as error:
                wait = self._wait(error, attempt, retry)
                if wait is None:
                    raise
                time.sleep(wait)
                attempt += 1

    def predict(self, name: str, texts: list[str], *, version: int | None = None) -> PredictResult:
        params = {"version": version} if version is not None else None
        return PredictResult.from_dict(self.request("POST", f"/v1/pipelines/{name}/predict",
                                                    json={"texts": list(texts)}, params=params))

    def train(self, name: str, texts: list[str], labels: list[str], *, estimator: str | None = None,
              feature: str = "embedding", params: dict[str, Any] | None = None, encoder: str | None = None,
              retain_texts: bool | None = None) -> TrainResult:
        """``encoder``: the registered encoder to fit through (``encoders()``); default: the gateway's first."""
        body = _train_body(texts, labels, estimator, feature, params, encoder, retain_texts)
        return TrainResult.from_dict(self.request("POST", f"/v1/pipelines/{name}/train", json=body,
                                                  timeout=self.train_timeout))

    def train_file(self, name: str, path: str | Path | TrainingFile, *, text_column: str = "text",
                   label_column: str = "label", estimator: str | None = None, feature: str = "embedding",
                   params: dict[str, Any] | None = None, chunk_rows: int = CHUNK_ROWS,
                   encoder: str | None = None, retain_texts: bool | None = None) -> TrainResult:
        """Streams a CSV file's rows in chunks (raises ``seam.upload.CSVProblem`` for a bad file). Given a
        path, a retry reads it again; a :class:`TrainingFile` (to watch its progress) is sent once."""
        fields = _file_fields(estimator, feature, params, encoder, retain_texts)
        files = _training_files(path, text_column, label_column, chunk_rows)
        return TrainResult.from_dict(self.request(
            "POST", f"/v1/pipelines/{name}/train", body=lambda: next(files).body(fields),
            headers={"Content-Type": "application/json"}, timeout=self.train_timeout,
            retry=not isinstance(path, TrainingFile)))

    def evaluate(self, name: str, texts: list[str], *, labels: list[str] | None = None,
                 targets: list[float] | None = None, version: int | None = None) -> dict[str, Any]:
        """Scores a version on labelled texts (a classifier) or numeric targets (a regressor): the gateway's
        metrics (accuracy, macro-F1, per class, confusion matrix, log-loss, ECE; or R², MAE, RMSE)."""
        return self.request("POST", f"/v1/pipelines/{name}/evaluate", json=_evaluate_body(texts, labels, targets),
                            params={"version": version} if version is not None else None, timeout=self.train_timeout)

    def refit(self, name: str, encoder: str, *, version: int | None = None, promote: bool = False,
              reuse: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        """A new version (a chain: one per link, bottom up) from the kept texts through ``encoder``,
        compared with the old; ``promote`` moves ``production`` once every new version passed its check."""
        return self.request("POST", f"/v1/pipelines/{name}/refit", json=_refit_body(encoder, version, promote, reuse),
                            timeout=self.train_timeout)

    def compare(self, name: str, texts: list[str], a: int | str, b: int | str, *,
                labels: list[str] | None = None) -> dict[str, Any]:
        """Two versions or aliases on the same texts, each on its own encoder: labels, agreement, and with
        ``labels`` the accuracy and macro-F1 of each."""
        return self.request("POST", f"/v1/pipelines/{name}/compare", json=_compare_body(texts, a, b, labels),
                            timeout=self.train_timeout)

    def aliases(self, name: str) -> dict[str, int]:
        return dict(self.request("GET", f"/v1/pipelines/{name}/aliases")["aliases"])

    def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        """Moves ``alias`` (``production``: what a plain predict serves) to ``version``; 409 if no encoder fits it."""
        return self.request("PUT", f"/v1/pipelines/{name}/aliases/{alias}", json={"version": version})

    def delete_alias(self, name: str, alias: str) -> None:
        self.request("DELETE", f"/v1/pipelines/{name}/aliases/{alias}")

    def pipelines(self) -> list[PipelineReport]:
        return [PipelineReport.from_dict(p) for p in self.request("GET", "/v1/pipelines")["pipelines"]]

    def pipeline(self, name: str) -> PipelineReport:
        """The pipeline's chain and compatibility report (an incompatible one is reported, not raised)."""
        return PipelineReport.from_dict(self.request("GET", f"/v1/pipelines/{name}"))

    def encoders(self) -> list[dict[str, Any]]:
        """The gateway's registered encoders: name, url, ready, model, outputs (with their contracts)."""
        return list(self.request("GET", "/v1/encoders")["encoders"])

    def ready(self) -> bool:
        try:
            self.request("GET", "/readyz")
        except (Unavailable, Unreachable):
            return False
        return True


class AsyncGateway(_Base):
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

    async def request(self, method: str, path: str, *, body: Callable[[], Any] | None = None,
                      timeout: httpx.Timeout | None = None, retry: bool = True, **kwargs: Any) -> Any:
        attempt = 0
        while True:
            if body is not None:
                kwargs["content"] = body()
            try:
                response = await self._http.request(method, path, timeout=timeout or self.timeout, **kwargs)
            except httpx.TransportError as exc:
                raise Unreachable(self.url + path, exc) from exc
            try:
                return self._result(response)
            except SeamError as error:
                wait = self._wait(error, attempt, retry)
                if wait is None:
                    raise
                await asyncio.sleep(wait)
                attempt += 1

    async def predict(self, name: str, texts: list[str], *, version: int | None = None) -> PredictResult:
        params = {"version": version} if version is not None else None
        return PredictResult.from_dict(await self.request("POST", f"/v1/pipelines/{name}/predict",
                                                          json={"texts": list(texts)}, params=params))

    async def train(self, name: str, texts: list[str], labels: list[str], *, estimator: str | None = None,
                    feature: str = "embedding", params: dict[str, Any] | None = None, encoder: str | None = None,
              retain_texts: bool | None = None) -> TrainResult:
        """``encoder``: the registered encoder to fit through (``encoders()``); default: the gateway's first."""
        body = _train_body(texts, labels, estimator, feature, params, encoder, retain_texts)
        return TrainResult.from_dict(await self.request("POST", f"/v1/pipelines/{name}/train", json=body,
                                                        timeout=self.train_timeout))

    async def train_file(self, name: str, path: str | Path | TrainingFile, *, text_column: str = "text",
                         label_column: str = "label", estimator: str | None = None, feature: str = "embedding",
                         params: dict[str, Any] | None = None, chunk_rows: int = CHUNK_ROWS,
                         encoder: str | None = None, retain_texts: bool | None = None) -> TrainResult:
        fields = _file_fields(estimator, feature, params, encoder, retain_texts)
        files = _training_files(path, text_column, label_column, chunk_rows)
        return TrainResult.from_dict(await self.request(
            "POST", f"/v1/pipelines/{name}/train", body=lambda: _chunks(next(files).body(fields)),
            headers={"Content-Type": "application/json"}, timeout=self.train_timeout,
            retry=not isinstance(path, TrainingFile)))

    async def evaluate(self, name: str, texts: list[str], *, labels: list[str] | None = None,
                       targets: list[float] | None = None, version: int | None = None) -> dict[str, Any]:
        return await self.request("POST", f"/v1/pipelines/{name}/evaluate", json=_evaluate_body(texts, labels, targets),
                                  params={"version": version} if version is not None else None,
                                  timeout=self.train_timeout)

    async def refit(self, name: str, encoder: str, *, version: int | None = None, promote: bool = False,
                    reuse: list[dict[str, Any]] | None = None) -> dict[str, Any]:
        return await self.request("POST", f"/v1/pipelines/{name}/refit",
                                  json=_refit_body(encoder, version, promote, reuse), timeout=self.train_timeout)

    async def compare(self, name: str, texts: list[str], a: int | str, b: int | str, *,
                      labels: list[str] | None = None) -> dict[str, Any]:
        return await self.request("POST", f"/v1/pipelines/{name}/compare",
                                  json=_compare_body(texts, a, b, labels), timeout=self.train_timeout)

    async def aliases(self, name: str) -> dict[str, int]:
        return dict((await self.request("GET", f"/v1/pipelines/{name}/aliases"))["aliases"])

    async def set_alias(self, name: str, alias: str, version: int) -> dict[str, Any]:
        return await self.request("PUT", f"/v1/pipelines/{name}/aliases/{alias}", json={"version": version})

    async def delete_alias(self, name: str, alias: str) -> None:
        await self.request("DELETE", f"/v1/pipelines/{name}/aliases/{alias}")

    async def pipelines(self) -> list[PipelineReport]:
        return [PipelineReport.from_dict(p) for p in (await self.request("GET", "/v1/pipelines"))["pipelines"]]

    async def pipeline(self, name: str) -> PipelineReport:
        return PipelineReport.from_dict(await self.request("GET", f"/v1/pipelines/{name}"))

    async def encoders(self) -> list[dict[str, Any]]:
        return list((await self.request("GET", "/v1/encoders"))["encoders"])

    async def ready(self) -> bool:
        try:
            await self.request("GET", "/readyz")
        except (Unavailable, Unreachable):
            return False
        return True


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
