"""Typed HTTP clients for the gateway's two upstreams, the encoder and the classifier.

Each client owns no connection of its own: it borrows one pooled ``Wire`` (``gateway.transport``,
built in the app's lifespan) and turns whatever goes wrong on the wire into the one error hierarchy:

- the upstream cannot be reached (refused, reset, not ready)   -> ``UpstreamUnavailable`` (503)
- it does not answer in time                                   -> ``UpstreamTimeout`` (504)
- its answer is not what the wire promises (shape, finite, ...)-> ``BadUpstreamResponse`` (502)
- it refuses the request with a 4xx problem                    -> ``UpstreamRejected`` (same status)

Every error names the upstream (role and URL) and the stage that failed. A refused connection goes
once more (nothing was sent); a pooled connection found closed goes once more for idempotent calls.
What the upstreams send is read with the models both sides share (``services.wire``).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass
from typing import Any

import numpy as np
from pydantic import BaseModel, ValidationError

from gateway.deadlines import note
from gateway.transport import Wire, WireError, WireResponse
from services import tracing
from services.codecs import BINARY_CONTENT_TYPE, CodecError, Frame, Ragged, Tensor, decode_binary, encode_binary
from services.errors import BadUpstreamResponse, Overloaded, SeamError, UpstreamTimeout, UpstreamUnavailable
from services.http.metrics import stage_label
from services.http.requestid import REQUEST_ID_HEADER, current_request_id
from services.wire import (
    CONTRACT_HEADER,
    INTERNAL_TOKEN_HEADER,
    PROBABILITY_RANGE_TOLERANCE,
    PROBABILITY_SUM_TOLERANCE,
    EncoderOutputs,
    VersionRecord,
)

_PROBLEM_FIELDS = ("type", "title", "status", "detail", "instance")


class UpstreamRejected(SeamError):
    """An upstream refused the request with a 4xx problem: passed on with its status, type and detail."""

    slug = "upstream-rejected"

    def __init__(self, status: int, problem: dict[str, Any], *, upstream: str, stage: str) -> None:
        detail = str(problem.get("detail") or f"{upstream} answered {status} at {stage}")
        extra = {k: v for k, v in problem.items() if k not in _PROBLEM_FIELDS}
        super().__init__(detail, upstream=upstream, stage=stage, **extra)
        self.status = status
        self.title = str(problem.get("title") or "Rejected by upstream")
        self.problem_type = problem.get("type")

    def to_problem(self, instance: str | None = None) -> dict[str, Any]:
        problem = super().to_problem(instance)
        if isinstance(self.problem_type, str):
            problem["type"] = self.problem_type
        return problem


# --- what the clients return ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Encoded:
    tensor: Tensor
    contract_id: str
    truncated: list[bool]


@dataclass(frozen=True)
class Predicted:
    probabilities: np.ndarray  # (rows, len(classes)), columns in ``classes`` order; a regressor: (rows, 1) values
    classes: list[str]
    labels: list[str]  # a regressor: empty
    ood: list[float] | None = None  # per row, in [0, 1]; None from a version without a summary
    in_distribution: list[bool] | None = None
    ood_threshold: float | None = None

    @property
    def values(self) -> np.ndarray:
        return self.probabilities[:, 0]


# --- one upstream ----------------------------------------------------------------------------------------


class Upstream:
    """One upstream service: its role (``encoder``/``classifier``), URL and pooled client."""

    role = "upstream"

    def __init__(self, url: str, wire: Wire, *, timeout_s: float, token: str | None = None) -> None:
        self.url = url
        self.wire = wire
        self.timeout_s = timeout_s
        self.headers = {INTERNAL_TOKEN_HEADER: token} if token else {}

    @property
    def name(self) -> str:
        return f"{self.role} {self.url}"

    async def request(self, stage: str, method: str, path: str, **kwargs: Any) -> WireResponse:
        """One call (see ``_request``); traced, when tracing is on, as a client span that the upstream continues."""
        if tracing.tracer is None:
            return await self._request(stage, method, path, **kwargs)
        attributes = {"seam.upstream": self.role, "seam.stage": stage, "http.request.method": method,
                      "server.address": self.url, "url.path": path}
        with tracing.span(f"{self.role} {stage_label(stage)}", kind="client", attributes=attributes) as span:
            kwargs["headers"] = tracing.inject(dict(kwargs.get("headers") or {}))
            response = await self._request(stage, method, path, **kwargs)
            span.set_attribute("http.response.status_code", response.status_code)
            return response

    async def _request(self, stage: str, method: str, path: str, *, retry: bool = True, timeout_s: float | None = None,
                       timeout_setting: str = "GATEWAY_TIMEOUT_S", headers: dict[str, str] | None = None,
                       **kwargs: Any) -> WireResponse:
        note(self.name, stage)  # what a request out of time was waiting for
        headers = {**self.headers, **(headers or {})}
        if (rid := current_request_id()) is not None:
            headers[REQUEST_ID_HEADER] = rid
        limit = timeout_s or self.timeout_s
        for attempt in (1, 2):
            try:
                async with asyncio.timeout(limit):  # one deadline per attempt, connect to last byte
                    response = await self.wire.send(method, path, headers=headers, **kwargs)
                break
            except TimeoutError as exc:
                raise UpstreamTimeout(
                    f"{self.name} did not answer within {limit:g}s ({stage}); raise {timeout_setting} if it is merely slow",
                    upstream=self.name, stage=stage,
                ) from exc
            except WireError as exc:
                if attempt == 1 and (exc.refused or (retry and exc.stale)):
                    continue  # refused: nothing was sent; stale: only idempotent calls (never a fit)
                raise UpstreamUnavailable(
                    f"{self.name} is unreachable ({stage}): {exc}", upstream=self.name, stage=stage,
                ) from exc
        if response.status_code >= 400:
            raise self._refusal(stage, response)
        return response

    def _refusal(self, stage: str, response: WireResponse) -> SeamError:
        status = response.status_code
        problem = response.problem()
        detail = problem.get("detail") or response.reason_phrase
        if status in (401, 403):
            return BadUpstreamResponse(
                f"{self.name} refused the gateway's credentials ({status}) at {stage}: {detail}; "
                "set GATEWAY_INTERNAL_TOKEN to the upstream's internal token",
                upstream=self.name, stage=stage,
            )
        if status == 429:
            retry_after = response.headers.get("retry-after", "1")
            return Overloaded(
                f"{self.name} is overloaded ({stage}): {detail}",
                retry_after=int(retry_after) if retry_after.isdigit() else 1,
                upstream=self.name, stage=stage,
            )
        if status == 503:
            return UpstreamUnavailable(f"{self.name} is not ready ({stage}): {detail}", upstream=self.name, stage=stage)
        if status >= 500:
            return BadUpstreamResponse(
                f"{self.name} failed at {stage} with {status}: {detail}", upstream=self.name, stage=stage
            )
        return UpstreamRejected(status, problem, upstream=self.name, stage=stage)

    def bad(self, stage: str, what: str) -> BadUpstreamResponse:
        return BadUpstreamResponse(f"{self.name} gave a bad answer at {stage}: {what}", upstream=self.name, stage=stage)

    def parse(self, stage: str, response: WireResponse, model: type[BaseModel]) -> Any:
        try:
            return model.model_validate_json(response.content)
        except ValidationError as exc:
            raise self.bad(stage, f"not a valid {model.__name__}: {exc.errors()[0].get('msg', exc)}") from exc

    def frame(self, stage: str, response: WireResponse) -> Frame:
        content_type = response.headers.get("content-type", "")
        if not content_type.startswith(BINARY_CONTENT_TYPE):
            raise self.bad(stage, f"expected a {BINARY_CONTENT_TYPE} frame, got {content_type or 'no content type'}")
        try:
            return decode_binary(response.content)
        except CodecError as exc:
            raise self.bad(stage, f"undecodable tensor frame: {exc}") from exc

    async def ready(self) -> dict[str, Any]:
        """``GET /readyz``: its body when ready; raises like any call otherwise."""
        response = await self.request("readiness", "GET", "/readyz")
        try:
            body = response.json()
        except ValueError:
            body = None
        return body if isinstance(body, dict) else {}


def check_rows(upstream: Upstream, stage: str, tensor: Tensor, *, rows: int, ragged: bool) -> None:
    """The structural promises of a tensor: layout, one row per text, finite values."""
    if isinstance(tensor, Ragged) != ragged:
        want, got = ("ragged", "dense") if ragged else ("dense", "ragged")
        raise upstream.bad(stage, f"expected a {want} tensor, got a {got} one")
    if len(tensor) != rows:
        raise upstream.bad(stage, f"{len(tensor)} rows for {rows} texts")
    values = tensor.values if isinstance(tensor, Ragged) else tensor
    if values.dtype != np.float32:
        raise upstream.bad(stage, f"values are {values.dtype}, not float32")
    if values.size and not np.isfinite(values).all():
        raise upstream.bad(stage, "values include NaN or infinity")
    if isinstance(tensor, Ragged) and rows and (tensor.lengths == 0).any():
        raise upstream.bad(stage, "an empty token sequence")


# --- the two clients -----------------------------------------------------------------------------------


class EncoderClient(Upstream):
    role = "encoder"

    async def outputs(self) -> EncoderOutputs:
        response = await self.request("outputs", "GET", "/v1/outputs")
        return self.parse("outputs", response, EncoderOutputs)

    async def encode(self, texts: list[str], output: str, float32: bool = False) -> Encoded:
        """Encode as a binary frame (``float32``: computed in float32 whatever the encoder serves); the
        structure is validated here, the width against the contract by the caller."""
        stage = f"encode {output}" + (" in float32" if float32 else "")
        body = {"texts": texts, "output": output, **({"precision": "float32"} if float32 else {})}
        response = await self.request(stage, "POST", "/v1/encode", json=body, headers={"Accept": BINARY_CONTENT_TYPE})
        frame = self.frame(stage, response)
        meta = frame.meta if isinstance(frame.meta, dict) else {}
        if meta.get("output", output) != output:
            raise self.bad(stage, f"asked for {output}, got {meta.get('output')}")
        check_rows(self, stage, frame.tensor, rows=len(texts), ragged=output == "tokens")
        contract_id = response.headers.get(CONTRACT_HEADER) or meta.get("contract_id")
        if not isinstance(contract_id, str) or not contract_id:
            raise self.bad(stage, f"no {CONTRACT_HEADER} header: cannot tell which contract the vectors follow")
        truncated = meta.get("truncated")
        if not isinstance(truncated, list) or len(truncated) != len(texts):
            truncated = [False] * len(texts)
        return Encoded(frame.tensor, contract_id, [bool(t) for t in truncated])


class ClassifierClient(Upstream):
    role = "classifier"

    async def models(self) -> list[VersionRecord]:
        """The latest version of every model."""
        response = await self.request("list models", "GET", "/v1/models")
        try:
            entries = response.json()["models"]
            return [VersionRecord.model_validate(entry["latest"]) for entry in entries]
        except (ValueError, KeyError, TypeError, ValidationError) as exc:
            raise self.bad("list models", f"not a model list: {exc}") from exc

    async def latest(self, name: str) -> VersionRecord:
        # The latest record alone: the model's full listing grows with every version it has.
        stage = f"read model {name}"
        response = await self.request(stage, "GET", f"/v1/models/{name}/latest")
        return self.parse(stage, response, VersionRecord)

    async def version(self, name: str, version: int) -> VersionRecord:
        stage = f"read model {name} v{version}"
        response = await self.request(stage, "GET", f"/v1/models/{name}/versions/{version}")
        return self.parse(stage, response, VersionRecord)

    async def delete(self, name: str) -> None:
        """Every version of the model; never retried (the first may have been done)."""
        await self.request(f"delete model {name}", "DELETE", f"/v1/models/{name}", retry=False)

    async def fit(self, name: str, features: Tensor, meta: dict[str, Any], *, timeout_s: float) -> VersionRecord:
        """Features as a binary frame, labels, contract, estimator, params and source in its ``meta``.
        Never retried (a second fit would be a second version); fits get their own, longer timeout."""
        stage = f"fit {name}"
        body = encode_binary(features, meta)
        response = await self.request(
            stage, "POST", f"/v1/models/{name}/fit", content=body,
            headers={"Content-Type": BINARY_CONTENT_TYPE, "Accept": "application/json"}, retry=False,
            timeout_s=timeout_s, timeout_setting="GATEWAY_FIT_TIMEOUT_S",
        )
        record = self.parse(stage, response, VersionRecord)
        if record.name != name:
            raise self.bad(stage, f"fitted {record.name!r}, not {name!r}")
        return record

    async def predict(self, model: VersionRecord, features: Tensor) -> Predicted:
        """Probabilities as a dense frame in the version's class order, validated before they go on."""
        stage = f"predict {model.name} v{model.version}"
        response = await self.request(
            stage, "POST", f"/v1/models/{model.name}/predict", params={"version": model.version},
            content=encode_binary(features), headers={"Content-Type": BINARY_CONTENT_TYPE, "Accept": BINARY_CONTENT_TYPE},
        )
        frame = self.frame(stage, response)
        rows = len(features)
        check_rows(self, stage, frame.tensor, rows=rows, ragged=False)
        probabilities = frame.tensor
        meta = frame.meta if isinstance(frame.meta, dict) else {}
        classes, labels = meta.get("classes"), meta.get("labels")
        ood, inside = meta.get("ood"), meta.get("in_distribution")
        if ood is not None and not (
            isinstance(ood, list) and len(ood) == rows and all(isinstance(s, (int, float)) and 0 <= s <= 1 for s in ood)
            and isinstance(inside, list) and len(inside) == rows and all(isinstance(b, bool) for b in inside)
        ):
            raise self.bad(stage, "out-of-distribution scores that are not one number in [0, 1] (and a flag) per row")
        if model.regression:
            if meta.get("task") != "regression" or probabilities.shape[1] != 1:
                raise self.bad(stage, "a regressor's answer that is not one column of values")
            if rows and not np.isfinite(probabilities).all():
                raise self.bad(stage, "values that are not finite numbers")
            return Predicted(probabilities, [], [], ood, inside, _threshold(meta))
        if classes != model.classes:
            raise self.bad(stage, f"classes {classes} differ from the version's record {model.classes}")
        if meta.get("version", model.version) != model.version:
            raise self.bad(stage, f"answered with v{meta.get('version')}")
        if probabilities.shape[1] != len(classes):
            raise self.bad(stage, f"{probabilities.shape[1]} probability columns for {len(classes)} classes")
        if rows and ((probabilities < -PROBABILITY_RANGE_TOLERANCE).any()
                     or (np.abs(probabilities.sum(axis=1) - 1.0) > PROBABILITY_SUM_TOLERANCE).any()):
            raise self.bad(stage, "rows are not probability distributions (negative, or not summing to 1)")
        if not isinstance(labels, list) or len(labels) != rows or any(label not in classes for label in labels):
            raise self.bad(stage, "missing or unknown predicted labels")
        return Predicted(probabilities, list(classes), [str(label) for label in labels], ood, inside, _threshold(meta))


def _threshold(meta: dict[str, Any]) -> float | None:
    value = meta.get("ood_threshold")
    return float(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else None
