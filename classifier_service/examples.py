"""Request examples for the classifier's /docs: a toy model fitted on 4-wide embeddings, so that each
example works when pasted in order (fit, then predict or infer) on a fresh store."""

from __future__ import annotations

from classifier_service.schemas import FitRequest, PredictRequest
from services.codecs import BINARY_CONTENT_TYPE
from services.http.protocols import request_body

MODEL = "toy-intents"
NAME_EXAMPLES = {"toy": {"summary": "the model the fit example creates", "value": MODEL}}

_CONTRACT = {
    "kind": "embedding", "dim": 4, "dtype": "float32",
    "space": {"model_id": "example-encoder", "weights_sha256": "0" * 64, "pooling": "mean", "normalized": False,
              "max_tokens": 128},
}
FIT = {
    "features": [[0.9, 0.1, 0.0, 0.2], [0.8, 0.2, 0.1, 0.1], [0.1, 0.9, 0.8, 0.0], [0.0, 0.8, 0.9, 0.1]],
    "labels": ["billing", "billing", "shipping", "shipping"],
    "contract": _CONTRACT,
    "estimator": "logistic_regression",
    "source": {"type": "encoder", "output": "embedding"},
}
PREDICT = {"features": [[0.85, 0.15, 0.05, 0.1], [0.05, 0.9, 0.85, 0.05]]}

FIT_BODY = request_body(FitRequest, {"toy": {"summary": "a 4-wide toy model", "value": FIT}},
                        binary=True, binary_type=BINARY_CONTENT_TYPE)
PREDICT_BODY = request_body(PredictRequest, {"toy": {"summary": "two rows for the toy model", "value": PREDICT}},
                            binary=True, binary_type=BINARY_CONTENT_TYPE)
