"""The Open Inference Protocol (KServe v2) on the classifier: each named model, each of its versions.

A model's input follows the kind of its input contract:

==================================  ================================================================
fitted on                           inputs
==================================  ================================================================
``embedding`` or ``probabilities``  ``FEATURES`` FP32 [-1, dim]
``tokens``                          ``FEATURES`` FP32 [-1, -1, dim], zero-padded, and ``LENGTHS``
                                    INT32 [-1] (tokens per row: padding never reaches the model)
==================================  ================================================================

Outputs: ``PROBABILITIES`` FP32 [-1, classes] in ``parameters.classes`` order, and ``LABEL`` BYTES [-1].
Features are checked against the version's input contract like ``/v1/models/{name}/predict``'s:
a mismatch is a 422 naming what was expected. Without a version, the latest one answers.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import numpy as np
from fastapi import APIRouter, Path, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from classifier_service.deps import ModelName, Runtime, whole_number
from classifier_service.runtime import ClassifierRuntime, LoadedVersion
from classifier_service.schemas import PredictFields, PredictInput
from services import oip
from services.codecs import Ragged
from services.errors import MalformedRequest, NotReady
from services.protocols import inference_response, input_tensor, read_inference, request_body, requested

router = APIRouter(prefix="/v2", tags=["open inference protocol"])

PLATFORM = "seam-classifier"
FEATURES, LENGTHS = "FEATURES", "LENGTHS"
OUTPUTS = ["PROBABILITIES", "LABEL"]

Version = Annotated[
    int, Path(ge=1, description="A version number.", openapi_examples={"1": {"value": 1}}), BeforeValidator(whole_number)
]

INFER_EXAMPLES = {
    "embedding": {
        "summary": "two rows for the docs' example model (fitted on 4-wide embeddings)",
        "value": {"inputs": [{"name": "FEATURES", "shape": [2, 4], "datatype": "FP32",
                              "data": [[0.9, 0.1, 0.0, 0.2], [0.0, 0.8, 0.9, 0.1]]}]},
    },
}
INFER_BODY = request_body(oip.InferenceRequest, INFER_EXAMPLES, binary=True)


def _inputs(loaded: LoadedVersion) -> list[oip.TensorMetadata]:
    contract = loaded.record.input_contract
    if contract.kind == "tokens":
        return [oip.TensorMetadata(name=FEATURES, datatype="FP32", shape=[-1, -1, contract.dim]),
                oip.TensorMetadata(name=LENGTHS, datatype="INT32", shape=[-1])]
    return [oip.TensorMetadata(name=FEATURES, datatype="FP32", shape=[-1, contract.dim])]


def _metadata(name: str, loaded: LoadedVersion, versions: list[int]) -> oip.ModelMetadata:
    record = loaded.record
    return oip.ModelMetadata(
        name=name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=_inputs(loaded),
        outputs=[oip.TensorMetadata(name="PROBABILITIES", datatype="FP32", shape=[-1, len(record.classes)]),
                 oip.TensorMetadata(name="LABEL", datatype="BYTES", shape=[-1])],
        parameters={"version": record.version, "estimator": record.estimator, "classes": record.classes,
                    "input_contract": record.input_contract.model_dump(mode="json"), "source": record.source},
    )


async def _loaded(runtime: ClassifierRuntime, name: str, version: int | None) -> tuple[LoadedVersion, list[int]]:
    versions = await anyio.to_thread.run_sync(runtime.versions, name)
    loaded = await anyio.to_thread.run_sync(runtime.get, name, version)
    return loaded, sorted(versions)


def _features(decoded: oip.DecodedRequest, loaded: LoadedVersion):
    """The FEATURES tensor in the layout the contract's kind needs: dense rows, or unpadded sequences."""
    if loaded.record.input_contract.kind != "tokens":
        return np.asarray(input_tensor(decoded, FEATURES, ("FP32",), 2), dtype=np.float32)
    padded = np.asarray(input_tensor(decoded, FEATURES, ("FP32",), 3), dtype=np.float32)
    if LENGTHS not in decoded.tensors:
        raise MalformedRequest(
            f"model {loaded.record.name!r} takes token sequences: send {LENGTHS} (INT32 [-1], tokens per row) with "
            f"the zero-padded {FEATURES}, so that padding is never read as tokens"
        )
    lengths = input_tensor(decoded, LENGTHS, ("INT32", "INT64"), 1)
    if len(lengths) != len(padded):
        raise MalformedRequest(f"{len(lengths)} {LENGTHS} for {len(padded)} rows of {FEATURES}")
    if (lengths < 0).any() or (lengths > padded.shape[1]).any():
        raise MalformedRequest(f"{LENGTHS} must lie between 0 and the padded length {padded.shape[1]}")
    return Ragged.from_rows([row[:n] for row, n in zip(padded, lengths.tolist())], dim=padded.shape[2])


def _outputs(classes: list[str], probabilities: np.ndarray) -> dict[str, oip.OutputTensor]:
    labels = np.array([classes[i].encode() for i in probabilities.argmax(axis=1)], dtype=object)
    return {
        "PROBABILITIES": oip.OutputTensor("PROBABILITIES", "FP32", probabilities.astype(np.float32)),
        "LABEL": oip.OutputTensor("LABEL", "BYTES", labels),
    }


@router.get("", response_model=oip.ServerMetadata)
async def server_metadata() -> oip.ServerMetadata:
    return oip.ServerMetadata(name="seam-classifier", version="0.1.0")


@router.get("/health/live")
async def live() -> dict[str, bool]:
    return {"live": True}


@router.get("/health/ready")
async def ready(request: Request) -> dict[str, bool]:
    """200 once the model store is loaded; 503 before."""
    runtime = getattr(request.app.state, "runtime", None)
    if runtime is None or not runtime.ready:
        raise NotReady("The model store is still loading.")
    return {"ready": True}


@router.get("/models/{name}", response_model=oip.ModelMetadata, response_model_exclude_none=True)
async def model_metadata(name: ModelName, runtime: Runtime) -> oip.ModelMetadata:
    """The latest version's inputs and outputs; ``versions`` lists them all."""
    loaded, versions = await _loaded(runtime, name, None)
    return _metadata(name, loaded, versions)


@router.get("/models/{name}/versions/{version}", response_model=oip.ModelMetadata, response_model_exclude_none=True)
async def version_metadata(name: ModelName, version: Version, runtime: Runtime) -> oip.ModelMetadata:
    loaded, versions = await _loaded(runtime, name, version)
    return _metadata(name, loaded, versions)


@router.get("/models/{name}/ready", response_model=oip.ModelReadiness)
async def model_ready(name: ModelName, runtime: Runtime) -> oip.ModelReadiness:
    """200 when the model exists (it is loaded with the store), 404 otherwise."""
    await _loaded(runtime, name, None)
    return oip.ModelReadiness(name=name, ready=True)


@router.get("/models/{name}/versions/{version}/ready", response_model=oip.ModelReadiness)
async def version_ready(name: ModelName, version: Version, runtime: Runtime) -> oip.ModelReadiness:
    await _loaded(runtime, name, version)
    return oip.ModelReadiness(name=name, ready=True)


@router.post("/models/{name}/infer", response_model=oip.InferenceResponse, response_model_exclude_none=True,
             openapi_extra=INFER_BODY)
async def infer(name: ModelName, request: Request, runtime: Runtime) -> Response:
    """Class probabilities and the predicted label per row of ``FEATURES``."""
    return await _infer(name, None, request, runtime)


@router.post("/models/{name}/versions/{version}/infer", response_model=oip.InferenceResponse,
             response_model_exclude_none=True, openapi_extra=INFER_BODY)
async def version_infer(name: ModelName, version: Version, request: Request, runtime: Runtime) -> Response:
    return await _infer(name, version, request, runtime)


async def _infer(name: str, version: int | None, request: Request, runtime: ClassifierRuntime) -> Response:
    loaded = await anyio.to_thread.run_sync(runtime.get, name, version)
    decoded = await read_inference(request)
    wanted = requested(decoded, OUTPUTS)
    features = await anyio.to_thread.run_sync(_features, decoded, loaded)
    # The version is pinned: the one whose contract shaped the features above.
    result = await runtime.predict(name, loaded.record.version, PredictInput(fields=PredictFields(), features=features))
    tensors = _outputs(result.classes, result.probabilities)
    return await inference_response(name, str(result.version), decoded, [(tensors[n], binary) for n, binary in wanted])
