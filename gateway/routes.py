"""HTTP routes of the gateway: a thin adapter over the runtime."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import Response
from pydantic import BaseModel

from gateway.runtime import GatewayRuntime
from gateway.schemas import (
    EncoderList,
    DriftReport,
    EvaluateRequest,
    EvaluateResponse,
    PipelineList,
    PipelineReport,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    TrainResponse,
    Version,
)
from services.http.auth import shows_details
from services.errors import NotReady

router = APIRouter()


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread, a round trip
# per request for what is an attribute lookup.
async def get_runtime(request: Request) -> GatewayRuntime:
    return request.app.state.runtime


Runtime = Annotated[GatewayRuntime, Depends(get_runtime)]


def sent(model: BaseModel, status_code: int = 200) -> Response:
    """``model`` as the JSON body, fields never set left out: what the route's ``response_model`` documents
    is what is sent (serialized once, with no second validation by FastAPI)."""
    return Response(model.model_dump_json(exclude_unset=True), status_code=status_code, media_type="application/json")
# Examples in /docs that work when pasted after `make run` (which trains support-intents).
PipelineName = Annotated[str, Path(description="Pipeline name.", openapi_examples={
    "demo": {"summary": "the demo pipeline `make run` trains", "value": "support-intents"}})]
NewPipelineName = Annotated[str, Path(description="Pipeline name; a new one, or a new version of an existing one.",
                                      openapi_examples={"new": {"summary": "a pipeline of your own", "value": "my-intents"}})]


@router.get("/healthz", tags=["health"])
async def healthz() -> dict[str, str]:
    """The process is alive (says nothing about the upstreams)."""
    return {"status": "alive"}


@router.get("/readyz", tags=["health"])
async def readyz(runtime: Runtime, request: Request) -> dict[str, Any]:
    """The classifier and at least one encoder ready (its contracts loaded): 200, each encoder reported;
    else 503 naming who fails. Upstream URLs, models and causes only for callers with an API key (when
    keys are set): a probe needs none."""
    if shows_details(request.scope):
        return await runtime.readiness()
    try:
        await runtime.readiness()
    except NotReady as exc:
        upstreams = exc.extra.get("upstreams", {})
        failing = [role for role, state in upstreams.items() if state != "ready"] or ["an upstream"]
        raise NotReady(
            f"not ready: {', '.join(failing)} not ready (send an API key to see why)", headers=exc.headers,
            upstreams={role: "ready" if state == "ready" else "not ready" for role, state in upstreams.items()},
        ) from None
    return {"status": "ready"}


@router.get("/v1/encoders", response_model=EncoderList, tags=["encoders"])
async def list_encoders(runtime: Runtime) -> Response:
    """Every registered encoder: name, URL, readiness, model, and its outputs with their contract ids."""
    return sent(EncoderList.model_validate(await runtime.encoders_report()))


@router.post("/v1/pipelines/{name}/train", status_code=201, response_model=TrainResponse, tags=["pipelines"])
async def train(name: NewPipelineName, body: TrainRequest, runtime: Runtime) -> Response:
    """Encode the texts with the requested feature and fit a new version of the pipeline's model."""
    record, truncated = await runtime.trainer.train(
        name, body.texts, body.labels, body.estimator, body.feature, body.params,
        encoder=body.encoder, retain_texts=body.retain_texts,
        targets=body.targets, preprocess=body.preprocess, calibrate=body.calibrate,
    )
    return sent(TrainResponse.of(record, body.feature, truncated), 201)


@router.post("/v1/pipelines/{name}/predict", response_model=PredictResponse, tags=["pipelines"])
async def predict(
    name: PipelineName,
    body: PredictRequest,
    runtime: Runtime,
    version: Annotated[Version | None, Query(gt=0, description="A fixed version; default: the production alias's "
                                             "when set, else the latest.")] = None,
    alias: Annotated[str | None, Query(description="An alias (production, canary, ...) instead of a version.")] = None,
) -> Response:
    """Resolve the pipeline's chain, check every link, encode and predict."""
    return sent(PredictResponse.of(await runtime.predict(name, body.texts, version, alias)))


@router.post("/v1/pipelines/{name}/evaluate", response_model=EvaluateResponse, tags=["pipelines"])
async def evaluate(
    name: PipelineName,
    body: EvaluateRequest,
    runtime: Runtime,
    version: Annotated[int | None, Query(gt=0, description="A fixed version; default: the latest.")] = None,
) -> Response:
    """Predict the texts as predict does, and score the predictions against the labels (accuracy,
    macro-F1, per-class precision / recall / support, confusion matrix, log-loss, ECE) or the targets
    (R², MAE, RMSE)."""
    return sent(EvaluateResponse.model_validate(await runtime.evaluate(name, body.texts, body.labels, body.targets, version)))


@router.get("/v1/pipelines/{name}/drift", response_model=DriftReport, tags=["pipelines"])
async def drift(
    name: PipelineName,
    runtime: Runtime,
    version: Annotated[int | None, Query(gt=0, description="A fixed version; default: the latest.")] = None,
) -> Response:
    """Out-of-distribution scores of this gateway's last GATEWAY_DRIFT_WINDOW predictions of the
    pipeline: the share out of distribution and the mean score, against the training baseline."""
    return sent(DriftReport.model_validate(await runtime.drift_report(name, version)))


@router.get("/v1/pipelines", response_model=PipelineList, tags=["pipelines"])
async def list_pipelines(runtime: Runtime) -> Response:
    """Every pipeline's chain and compatibility report."""
    return sent(PipelineList.model_validate(await runtime.pipelines_report()))


@router.get("/v1/pipelines/{name}", response_model=PipelineReport, tags=["pipelines"])
async def get_pipeline(name: PipelineName, runtime: Runtime) -> Response:
    """The pipeline's chain (each link's source, producer and consumer) and its compatibility report."""
    return sent(PipelineReport.model_validate(await runtime.pipeline_report(name)))


@router.delete("/v1/pipelines/{name}", status_code=204, tags=["pipelines"])
async def delete_pipeline(name: PipelineName, runtime: Runtime) -> Response:
    """Delete every version of the pipeline's model (needs the ``admin`` scope when keys are scoped).
    Other replicas' caches may serve it for up to ``GATEWAY_PIPELINE_TTL_S``."""
    await runtime.delete(name)
    return Response(status_code=204)
