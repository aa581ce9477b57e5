"""HTTP routes: a thin adapter over :class:`~classifier_service.runtime.ClassifierRuntime`."""

from __future__ import annotations

from typing import Any

import anyio
from fastapi import APIRouter, Request, Response

from classifier_service.deps import (
    BinaryResponse, FitBody, ModelName, PredictBody, Runtime, VersionPath, VersionQuery, get_runtime,
)
from classifier_service.examples import FIT_BODY, PREDICT_BODY
from classifier_service.loaded import LoadedVersion
from classifier_service.runtime import ClassifierRuntime
from classifier_service.schemas import (
    DamagedEntry,
    ModelDetail,
    ModelList,
    LatestRecord,
    ModelSummary,
    PredictResponse,
    Readiness,
    SkippedEntry,
    VersionRecord,
    render_prediction,
)
from services import tracing
from services.http.auth import shows_details

router = APIRouter()


def _skipped(runtime: ClassifierRuntime) -> list[SkippedEntry]:
    return [SkippedEntry(path=s.path, reason=s.reason) for s in runtime.skipped]


def _damaged(damaged: dict[int, str]) -> list[DamagedEntry]:
    return [DamagedEntry(version=v, reason=damaged[v]) for v in sorted(damaged)]


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", tags=["health"], response_model_exclude_none=True)
async def readyz(request: Request) -> Readiness:
    """200 once the store is loaded; lists the entries it skipped. Memory only: probes never touch the disk.
    The counts and entries only for callers with the internal token (when one is set): a probe needs none."""
    runtime = await get_runtime(request)
    if not shows_details(request.scope):
        return Readiness(status="ready")
    return Readiness(status="ready", models=runtime.model_count, skipped=_skipped(runtime))


@router.get("/v1/models", tags=["models"])
async def list_models(runtime: Runtime) -> ModelList:
    """Every model with a version that loads; ``damaged`` lists its versions whose files are damaged (a
    model none of whose versions load is listed in ``skipped`` only)."""
    models = await anyio.to_thread.run_sync(runtime.list_models)
    summaries = [
        ModelSummary(name=name, latest=versions[max(versions)].record, versions=sorted(versions), damaged=_damaged(damaged))
        for name, versions, damaged in models if versions
    ]
    return ModelList(models=summaries, skipped=_skipped(runtime))


@router.get("/v1/models/{name}", tags=["models"])
async def get_model(name: ModelName, runtime: Runtime) -> ModelDetail:
    """Every version that loads, and every damaged one with why. ``latest`` is null when the newest
    version is damaged (the latest is then refused, never replaced by an older one)."""
    versions = await anyio.to_thread.run_sync(runtime.versions, name)
    damaged = runtime.damaged(name)
    records = [versions[v].record for v in sorted(versions)]
    newest_loads = bool(records) and (not damaged or max(versions) > max(damaged))
    return ModelDetail(name=name, latest=records[-1] if newest_loads else None, versions=records, damaged=_damaged(damaged))


@router.get("/v1/models/{name}/latest", tags=["models"])
async def get_latest(name: ModelName, runtime: Runtime) -> LatestRecord:
    """The latest version's record alone, with the model's aliases: what the gateway reads. (``GET
    /v1/models/{name}`` lists every version, so its size, and the time and memory to read it, grow with each.)"""
    def read() -> LatestRecord:
        loaded: LoadedVersion = runtime.get(name, None)
        return LatestRecord(**loaded.record.model_dump(), aliases=runtime.aliases.get(name))

    return await anyio.to_thread.run_sync(read)


@router.get("/v1/models/{name}/versions/{version}", tags=["models"])
async def get_version(name: ModelName, version: VersionPath, runtime: Runtime) -> VersionRecord:
    loaded: LoadedVersion = await anyio.to_thread.run_sync(runtime.get, name, version)
    return loaded.record


@router.get("/v1/models/{name}/versions/{version}/reference", tags=["models"])
async def get_reference(name: ModelName, version: VersionPath, runtime: Runtime) -> dict[str, Any]:
    """The version's reference sample: texts, their labels, and the probabilities the version gave them
    at fit time (``classes`` order). 404 ``no-retained-data`` when it kept none. Behind the internal token."""
    return await anyio.to_thread.run_sync(runtime.retained, name, version, "reference")


@router.get("/v1/models/{name}/versions/{version}/training-data", tags=["models"])
async def get_training_data(name: ModelName, version: VersionPath, runtime: Runtime) -> dict[str, Any]:
    """Every training text of the version and its label. 404 ``no-retained-data`` when it kept none."""
    return await anyio.to_thread.run_sync(runtime.retained, name, version, "training")


@router.delete("/v1/models/{name}", status_code=204, tags=["models"])
async def delete_model(name: ModelName, runtime: Runtime) -> Response:
    await anyio.to_thread.run_sync(runtime.delete, name)
    return Response(status_code=204)


@router.post("/v1/models/{name}/fit", status_code=201, tags=["models"], openapi_extra=FIT_BODY)
async def fit(name: ModelName, body: FitBody, runtime: Runtime, response: Response) -> LatestRecord:
    """Fits a new version. Body: JSON ``{"features", "labels", "contract", "estimator", "params",
    "source"}``, or a binary tensor frame holding the features with the other fields in its ``meta``.
    The answer is the new record with the model's aliases (a fit moves none)."""
    with tracing.span("classifier fit", attributes={"seam.model": name}):
        record = await runtime.fit(name, body)
    response.headers["Location"] = f"/v1/models/{name}/versions/{record.version}"
    aliases = await anyio.to_thread.run_sync(runtime.aliases.get, name)
    return LatestRecord(**record.model_dump(), aliases=aliases)


@router.post("/v1/models/{name}/predict", tags=["models"], response_model=PredictResponse, openapi_extra=PREDICT_BODY)
async def predict(name: ModelName, body: PredictBody, runtime: Runtime, binary: BinaryResponse, version: VersionQuery = None) -> Response:
    """Label and class probabilities per row (a regressor: ``value``), with the out-of-distribution
    score ``ood`` and ``in_distribution``. ``Accept: application/vnd.seam.tensor`` answers with a dense
    frame of probabilities in ``classes`` order (a regressor: one column of values) instead of JSON."""
    def answer() -> Response:  # checks, prediction and rendering in one go (one trip to a worker thread, if any)
        result = runtime.predict_sync(name, version, body)
        return render_prediction(
            result.name, result.version, result.classes, result.probabilities, binary,
            task=result.task, ood=result.ood, threshold=runtime.settings.ood_threshold,
        )

    with tracing.span("classifier predict", attributes={"seam.model": name}):
        return await runtime.run_predict(name, version, body, answer)
