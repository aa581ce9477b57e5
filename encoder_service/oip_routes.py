"""The Open Inference Protocol (KServe v2) on the encoder: one model per output, for tritonclient & co.

=================  =========================  ===============================================
model              inputs                     outputs
=================  =========================  ===============================================
``embedding``      ``TEXT`` BYTES [-1]        ``EMBEDDING`` FP32 [-1, dim], ``TRUNCATED`` BOOL [-1]
``tokens``         ``TEXT`` BYTES [-1]        ``TOKENS`` FP32 [-1, -1, dim] (zero-padded),
                                              ``LENGTHS`` INT32 [-1], ``TRUNCATED`` BOOL [-1]
``probabilities``  ``TEXT`` BYTES [-1]        ``PROBABILITIES`` FP32 [-1, labels], ``LABEL`` BYTES [-1],
                                              ``TRUNCATED`` BOOL [-1]  (only for a model with a head)
=================  =========================  ===============================================

Each model has one version, ``1``. The metadata's ``parameters`` carry the output's seam contract
(``contract``, ``contract_id``). Texts go through the same batcher as ``/v1/encode``.
"""

from __future__ import annotations

from typing import Annotated

import anyio
import numpy as np
from fastapi import Path, Request
from fastapi.responses import Response

from encoder_service.routes import check_json_size, check_limits, get_batcher, get_runtime, get_settings
from encoder_service.runtime import EncoderRuntime, Output
from services import oip
from services.errors import InvalidInput, MalformedRequest, ModelNotFound, NotReady
from services.http.oip import ModelServer, inference_response, input_tensor, oip_router, read_inference, requested
from services.http.protocols import request_body
from services.wire import CONTRACT_HEADER

VERSION = "1"
PLATFORM = "seam-encoder"
TEXT = "TEXT"
# Output names of each model, in the order a response lists them.
OUTPUT_NAMES = {
    "embedding": ("EMBEDDING", "TRUNCATED"),
    "tokens": ("TOKENS", "LENGTHS", "TRUNCATED"),
    "probabilities": ("PROBABILITIES", "LABEL", "TRUNCATED"),
}

ModelName = Annotated[str, Path(description="embedding | tokens | probabilities",
                                openapi_examples={"embedding": {"value": "embedding"}})]
ModelVersion = Annotated[str, Path(description="Always 1.", openapi_examples={"1": {"value": "1"}})]

INFER_EXAMPLES = {
    "json": {
        "summary": "two texts, JSON in and out",
        "value": {"inputs": [{"name": "TEXT", "shape": [2], "datatype": "BYTES",
                              "data": ["Where is my parcel?", "I was charged twice."]}],
                  "outputs": [{"name": "EMBEDDING"}]},
    },
}
INFER_BODY = request_body(oip.InferenceRequest, INFER_EXAMPLES, binary=True)


def _model(runtime: EncoderRuntime, name: str, version: str | None) -> Output:
    if name not in runtime.outputs:
        why = f" ({runtime.model_id} has no sequence-classification head)" if name == "probabilities" else ""
        raise ModelNotFound(f"no model {name!r}{why}; this encoder serves {sorted(runtime.outputs)}", name=name)
    if version not in (None, VERSION):
        raise ModelNotFound(f"model {name!r} has only version {VERSION}, not {version!r}", name=name, version=version)
    return runtime.outputs[name]


def _metadata(runtime: EncoderRuntime, name: str, output: Output) -> oip.ModelMetadata:
    dim = output.contract.dim
    shapes = {
        "EMBEDDING": ("FP32", [-1, dim]),
        "TOKENS": ("FP32", [-1, -1, dim]),
        "LENGTHS": ("INT32", [-1]),
        "PROBABILITIES": ("FP32", [-1, dim]),
        "LABEL": ("BYTES", [-1]),
        "TRUNCATED": ("BOOL", [-1]),
    }
    return oip.ModelMetadata(
        name=name,
        versions=[VERSION],
        platform=PLATFORM,
        inputs=[oip.TensorMetadata(name=TEXT, datatype="BYTES", shape=[-1])],
        outputs=[oip.TensorMetadata(name=n, datatype=shapes[n][0], shape=shapes[n][1]) for n in OUTPUT_NAMES[name]],
        parameters={"encoder_model": runtime.model_id, "contract_id": output.id,
                    "contract": output.contract.model_dump(mode="json")},
    )


def _texts(decoded: oip.DecodedRequest) -> list[str]:
    array = decoded.tensors.get(TEXT)
    if array is not None and array.ndim == 2 and array.shape[1] == 1:
        array = array.reshape(-1)  # [n, 1], as Triton batch examples often send it
        decoded.tensors[TEXT] = array
    array = input_tensor(decoded, TEXT, ("BYTES",), 1)
    if len(array) == 0:
        raise InvalidInput("TEXT holds no texts; send at least one")
    try:
        return [item.decode("utf-8") for item in array.tolist()]
    except UnicodeDecodeError as exc:
        raise MalformedRequest(f"TEXT elements must be UTF-8 text: {exc}") from exc


async def _ready(request: Request) -> None:
    """200 once the model is loaded and warm; 503 before (the ``Runtime`` dependency says which)."""
    await get_runtime(request)


async def _metadata_of(request: Request, name: str, version: str | None) -> oip.ModelMetadata:
    """Inputs and outputs with their datatypes and shapes; ``parameters.contract`` is the seam contract."""
    runtime = await get_runtime(request)
    return _metadata(runtime, name, _model(runtime, name, version))


async def _model_ready(request: Request, name: str, version: str | None) -> None:
    """200 when the model can infer, 503 while loading, 404 for a model this encoder does not serve."""
    runtime: EncoderRuntime = request.app.state.runtime
    if not runtime.ready:
        raise NotReady("the model is still loading; retry shortly", headers={"Retry-After": "2"})
    _model(runtime, name, version)


async def _infer(request: Request, name: str, version: str | None) -> Response:
    """Encode ``TEXT``. JSON, or binary tensors after the JSON (``Inference-Header-Content-Length``)."""
    runtime, batcher, settings = await get_runtime(request), await get_batcher(request), await get_settings(request)
    output = _model(runtime, name, version)
    decoded = await read_inference(request)
    texts = _texts(decoded)
    wanted = requested(decoded, list(OUTPUT_NAMES[name]))
    check_limits(texts, settings)
    padded_json = name == "tokens" and not dict(wanted).get("TOKENS", True)

    def check(items: list) -> None:  # the padded TOKENS answer in JSON: refused before the forward pass
        if padded_json:
            check_json_size(len(items) * max(i.n_tokens for i in items) * output.contract.dim, settings, name)

    items, vectors = await batcher.encode(texts, name, check)
    tensors = await anyio.to_thread.run_sync(_tensors, name, output, vectors, [item.truncated for item in items])
    outputs = [(tensors[n], binary) for n, binary in wanted]
    check_json_size(sum(t.array.size for t, binary in outputs if not binary), settings, name)
    return await inference_response(name, VERSION, decoded, outputs, headers={CONTRACT_HEADER: output.id})


def _tensors(name: str, output: Output, vectors: list[np.ndarray], truncated: list[bool]) -> dict[str, oip.OutputTensor]:
    dim = output.contract.dim
    found = {"TRUNCATED": oip.OutputTensor("TRUNCATED", "BOOL", np.array(truncated, dtype=bool))}
    if name == "tokens":
        values, lengths = oip.padded(vectors, dim)
        found["TOKENS"] = oip.OutputTensor("TOKENS", "FP32", values)
        found["LENGTHS"] = oip.OutputTensor("LENGTHS", "INT32", lengths)
        return found
    stacked = np.stack(vectors).astype(np.float32, copy=False)
    if name == "probabilities":
        labels = output.contract.labels or []
        found["PROBABILITIES"] = oip.OutputTensor("PROBABILITIES", "FP32", stacked)
        found["LABEL"] = oip.OutputTensor("LABEL", "BYTES", np.array([labels[i].encode() for i in stacked.argmax(axis=1)], dtype=object))
    else:
        found["EMBEDDING"] = oip.OutputTensor("EMBEDDING", "FP32", stacked)
    return found


router = oip_router(ModelServer(server="seam-encoder", name_type=ModelName, version_type=ModelVersion, ready=_ready,
                                metadata=_metadata_of, model_ready=_model_ready, infer=_infer, infer_body=INFER_BODY))
