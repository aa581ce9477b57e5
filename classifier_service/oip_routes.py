"""The Open Inference Protocol (KServe v2) on the classifier: each named model, each of its versions.

A model's input follows the kind of its input contract:

==================================  ================================================================
fitted on                           inputs
==================================  ================================================================
``embedding`` or ``probabilities``  ``FEATURES`` FP32 [-1, dim]
``tokens``                          ``FEATURES`` FP32 [-1, -1, dim], zero-padded, and ``LENGTHS``
                                    INT32 [-1] (tokens per row: padding never reaches the model)
==================================  ================================================================

Outputs: ``PROBABILITIES`` FP32 [-1, classes] in ``parameters.classes`` order, and ``LABEL`` BYTES [-1];
a regressor (``parameters.task`` "regression") has ``VALUE`` FP32 [-1] instead.
Features are checked against the version's input contract like ``/v1/models/{name}/predict``'s:
a mismatch is a 422 naming what was expected. Without a version, the latest one answers.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import numpy as np
from fastapi import Path, Request
from fastapi.responses import Response
from pydantic import BeforeValidator

from classifier_service.deps import ModelName, get_runtime, whole_number
from classifier_service.runtime import ClassifierRuntime, LoadedVersion, PredictionResult
from classifier_service.schemas import PredictFields, PredictInput
from services import oip
from services.codecs import Ragged
from services.errors import MalformedRequest
from services.http.oip import ModelServer, inference_response, input_tensor, oip_router, read_inference, requested
from services.http.protocols import request_body

PLATFORM = "seam-classifier"
FEATURES, LENGTHS = "FEATURES", "LENGTHS"
OUTPUTS = ["PROBABILITIES", "LABEL"]
REGRESSION_OUTPUTS = ["VALUE"]


def _output_names(loaded: LoadedVersion) -> list[str]:
    return REGRESSION_OUTPUTS if loaded.record.task == "regression" else OUTPUTS

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


_OUTPUT_META = {
    "PROBABILITIES": lambda r: oip.TensorMetadata(name="PROBABILITIES", datatype="FP32", shape=[-1, len(r.classes)]),
    "LABEL": lambda r: oip.TensorMetadata(name="LABEL", datatype="BYTES", shape=[-1]),
    "VALUE": lambda r: oip.TensorMetadata(name="VALUE", datatype="FP32", shape=[-1]),
}


def _metadata(name: str, loaded: LoadedVersion, versions: list[int]) -> oip.ModelMetadata:
    record = loaded.record
    return oip.ModelMetadata(
        name=name,
        versions=[str(v) for v in versions],
        platform=PLATFORM,
        inputs=_inputs(loaded),
        outputs=[_OUTPUT_META[n](record) for n in _output_names(loaded)],
        parameters={"version": record.version, "estimator": record.estimator, "task": record.task, "classes": record.classes,
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


def _outputs(result: PredictionResult) -> dict[str, oip.OutputTensor]:
    tensors: dict[str, oip.OutputTensor] = {}
    if result.task == "regression":
        tensors["VALUE"] = oip.OutputTensor("VALUE", "FP32", np.asarray(result.probabilities, dtype=np.float32).reshape(-1))
    else:
        probabilities = result.probabilities
        labels = np.array([result.classes[i].encode() for i in probabilities.argmax(axis=1)], dtype=object)
        tensors["PROBABILITIES"] = oip.OutputTensor("PROBABILITIES", "FP32", probabilities.astype(np.float32))
        tensors["LABEL"] = oip.OutputTensor("LABEL", "BYTES", labels)
    return tensors


async def _ready(request: Request) -> None:
    """200 once the model store is loaded; 503 before."""
    await get_runtime(request)


async def _metadata_of(request: Request, name: str, version: int | None) -> oip.ModelMetadata:
    """The latest version's inputs and outputs; ``versions`` lists them all."""
    loaded, versions = await _loaded(await get_runtime(request), name, version)
    return _metadata(name, loaded, versions)


async def _model_ready(request: Request, name: str, version: int | None) -> None:
    """200 when the model exists (it is loaded with the store), 404 otherwise."""
    await _loaded(await get_runtime(request), name, version)


async def _infer(request: Request, name: str, version: int | None) -> Response:
    """Class probabilities and the predicted label per row of ``FEATURES``."""
    runtime = await get_runtime(request)
    loaded = await anyio.to_thread.run_sync(runtime.get, name, version)
    decoded = await read_inference(request)
    wanted = requested(decoded, _output_names(loaded))
    features = await anyio.to_thread.run_sync(_features, decoded, loaded)
    # The version is pinned: the one whose contract shaped the features above.
    result = await runtime.predict(name, loaded.record.version, PredictInput(fields=PredictFields(), features=features))
    tensors = _outputs(result)
    return await inference_response(name, str(result.version), decoded, [(tensors[n], binary) for n, binary in wanted])


router = oip_router(ModelServer(server="seam-classifier", name_type=ModelName, version_type=Version, ready=_ready,
                                metadata=_metadata_of, model_ready=_model_ready, infer=_infer, infer_body=INFER_BODY))
