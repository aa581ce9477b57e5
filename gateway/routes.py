"""HTTP routes of the gateway: a thin adapter over the runtime."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Depends, Path, Query, Request
from fastapi.responses import JSONResponse

from gateway.runtime import GatewayRuntime
from gateway.schemas import (
    DriftReport,
    EvaluateRequest,
    EvaluateResponse,
    PipelineList,
    PipelineReport,
    PredictRequest,
    PredictResponse,
    TrainRequest,
    TrainResponse,
)

router = APIRouter()


# Dependencies are ``async def``: FastAPI runs a plain ``def`` one in a worker thread, a round trip
# per request for what is an attribute lookup.
async def get_runtime(request: Request) -> GatewayRuntime:
    return request.app.state.runtime


Runtime = Annotated[GatewayRuntime, Depends(get_runtime)]
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
async def readyz(runtime: Runtime) -> dict[str, Any]:
    """Both upstreams ready and the encoder's contracts loaded: 200; else 503 naming who fails."""
    return await runtime.readiness()


@router.post("/v1/pipelines/{name}/train", status_code=201, response_model=TrainResponse, tags=["pipelines"])
async def train(name: NewPipelineName, body: TrainRequest, runtime: Runtime) -> JSONResponse:
    """Encode the texts with the requested feature and fit a new version of the pipeline's model."""
    result = await runtime.train(
        name, body.texts, body.labels, body.estimator, body.feature, body.params,
        targets=body.targets, preprocess=body.preprocess, calibrate=body.calibrate,
    )
    return JSONResponse(result, status_code=201)


@router.post("/v1/pipelines/{name}/predict", response_model=PredictResponse, tags=["pipelines"])
async def predict(
    name: PipelineName,
    body: PredictRequest,
    runtime: Runtime,
    version: Annotated[int | None, Query(gt=0, description="A fixed version; default: the latest.")] = None,
) -> JSONResponse:
    """Resolve the pipeline's chain, check every link, encode and predict."""
    return JSONResponse(await runtime.predict(name, body.texts, version))


@router.post("/v1/pipelines/{name}/evaluate", response_model=EvaluateResponse, tags=["pipelines"])
async def evaluate(
    name: PipelineName,
    body: EvaluateRequest,
    runtime: Runtime,
    version: Annotated[int | None, Query(gt=0, description="A fixed version; default: the latest.")] = None,
) -> JSONResponse:
    """Predict the texts as predict does, and score the predictions against the labels (accuracy,
    macro-F1, per-class precision / recall / support, confusion matrix, log-loss, ECE) or the targets
    (R², MAE, RMSE)."""
    return JSONResponse(await runtime.evaluate(name, body.texts, body.labels, body.targets, version))


@router.get("/v1/pipelines/{name}/drift", response_model=DriftReport, tags=["pipelines"])
async def drift(
    name: PipelineName,
    runtime: Runtime,
    version: Annotated[int | None, Query(gt=0, description="A fixed version; default: the latest.")] = None,
) -> JSONResponse:
    """Out-of-distribution scores of this gateway's last GATEWAY_DRIFT_WINDOW predictions of the
    pipeline: the share out of distribution and the mean score, against the training baseline."""
    return JSONResponse(await runtime.drift_report(name, version))


@router.get("/v1/pipelines", response_model=PipelineList, tags=["pipelines"])
async def list_pipelines(runtime: Runtime) -> JSONResponse:
    """Every pipeline's chain and compatibility report."""
    return JSONResponse(await runtime.pipelines_report())


@router.get("/v1/pipelines/{name}", response_model=PipelineReport, tags=["pipelines"])
async def get_pipeline(name: PipelineName, runtime: Runtime) -> JSONResponse:
    """The pipeline's chain (each link's source, producer and consumer) and its compatibility report."""
    return JSONResponse(await runtime.pipeline_report(name))
