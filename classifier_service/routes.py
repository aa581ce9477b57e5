"""HTTP routes: a thin adapter over :class:`~classifier_service.runtime.ClassifierRuntime`."""

from __future__ import annotations

from typing import Annotated

import anyio
from fastapi import APIRouter, Path, Request, Response

from classifier_service.deps import BinaryResponse, FitBody, ModelName, PredictBody, Runtime, VersionQuery
from classifier_service.examples import FIT_BODY, PREDICT_BODY
from classifier_service.runtime import ClassifierRuntime, LoadedVersion
from classifier_service.schemas import (
    ModelDetail,
    ModelList,
    ModelSummary,
    PredictResponse,
    Readiness,
    SkippedEntry,
    VersionRecord,
    render_prediction,
)
from services import tracing
from services.errors import NotReady

router = APIRouter()


def _skipped(runtime: ClassifierRuntime) -> list[SkippedEntry]:
    return [SkippedEntry(path=s.path, reason=s.reason) for s in runtime.skipped]


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    return {"status": "alive"}


@router.get("/readyz", tags=["health"])
async def readyz(request: Request) -> Readiness:
    """200 once the store is loaded; lists the entries it skipped. Memory only: probes never touch the disk."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise NotReady("The model store is still loading.")
    return Readiness(status="ready", models=runtime.model_count, skipped=_skipped(runtime))


@router.get("/v1/models", tags=["models"])
async def list_models(runtime: Runtime) -> ModelList:
    models = await anyio.to_thread.run_sync(runtime.list_models)
    summaries = [
        ModelSummary(name=name, latest=versions[max(versions)].record, versions=sorted(versions))
        for name, versions in models
    ]
    return ModelList(models=summaries, skipped=_skipped(runtime))


@router.get("/v1/models/{name}", tags=["models"])
async def get_model(name: ModelName, runtime: Runtime) -> ModelDetail:
    versions = await anyio.to_thread.run_sync(runtime.versions, name)
    records = [versions[v].record for v in sorted(versions)]
    return ModelDetail(name=name, latest=records[-1], versions=records)


@router.get("/v1/models/{name}/latest", tags=["models"])
async def get_latest(name: ModelName, runtime: Runtime) -> VersionRecord:
    """The latest version's record alone: what the gateway reads. (``GET /v1/models/{name}`` lists every
    version, so its size, and the time and memory to read it, grow with each version.)"""
    loaded: LoadedVersion = await anyio.to_thread.run_sync(runtime.get, name, None)
    return loaded.record


@router.get("/v1/models/{name}/versions/{version}", tags=["models"])
async def get_version(name: ModelName, version: Annotated[int, Path(ge=1)], runtime: Runtime) -> VersionRecord:
    loaded: LoadedVersion = await anyio.to_thread.run_sync(runtime.get, name, version)
    return loaded.record


@router.delete("/v1/models/{name}", status_code=204, tags=["models"])
async def delete_model(name: ModelName, runtime: Runtime) -> Response:
    await anyio.to_thread.run_sync(runtime.delete, name)
    return Response(status_code=204)


@router.post("/v1/models/{name}/fit", status_code=201, tags=["models"], openapi_extra=FIT_BODY)
async def fit(name: ModelName, body: FitBody, runtime: Runtime, response: Response) -> VersionRecord:
    """Fits a new version. Body: JSON ``{"features", "labels", "contract", "estimator", "params",
    "source"}``, or a binary tensor frame holding the features with the other fields in its ``meta``."""
    with tracing.span("classifier fit", attributes={"seam.model": name}):
        record = await runtime.fit(name, body)
    response.headers["Location"] = f"/v1/models/{name}/versions/{record.version}"
    return record


@router.post("/v1/models/{name}/predict", tags=["models"], response_model=PredictResponse, openapi_extra=PREDICT_BODY)
async def predict(name: ModelName, body: PredictBody, runtime: Runtime, binary: BinaryResponse, version: VersionQuery = None) -> Response:
    """Label and class probabilities per row. ``Accept: application/vnd.seam.tensor`` answers with a
    dense frame of probabilities in ``classes`` order instead of JSON."""
    def answer() -> Response:  # checks, prediction and rendering in one go (one trip to a worker thread, if any)
        result = runtime.predict_sync(name, version, body)
        return render_prediction(result.name, result.version, result.classes, result.probabilities, binary)

    with tracing.span("classifier predict", attributes={"seam.model": name}):
        return await runtime.run_predict(name, version, body, answer)
