"""Fake encoder and classifier speaking docs/wire.md, as ``httpx.MockTransport`` handlers.

They let the gateway tests do what the real services never do on purpose: answer NaN, the wrong
number of rows, a 401, a 429, nothing at all, or too late. Tests with the real services wired in
process live in test_app.py.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import zlib
from collections import Counter
from collections.abc import Callable
from typing import Any

import httpx
import numpy as np

from services.codecs import BINARY_CONTENT_TYPE, Ragged, decode_binary, encode_binary
from services.contracts import EmbeddingSpace, TensorContract
from tests.support import PROBLEM

ENCODER_URL = "http://encoder.test:8001"  # where the gateway fixtures (conftest.py) find the fakes
CLASSIFIER_URL = "http://classifier.test:8002"
Fault = Callable[[httpx.Request], Any]


TEXTS = ["where is my parcel", "charged twice", "reset my password", "cancel my plan", "refund please",
         "parcel lost", "invoice wrong", "login fails", "change my email", "hello"]
LABELS = ["shipping", "billing", "account", "account", "billing", "shipping", "billing", "account", "account", "shipping"]


async def train(client: httpx.AsyncClient, name: str, feature: str = "embedding", estimator: str = "logistic_regression",
                **extra: Any) -> httpx.Response:
    """Train ``name`` through the gateway on TEXTS and LABELS."""
    body = {"texts": TEXTS, "labels": LABELS, "estimator": estimator, "feature": feature, **extra}
    return await client.post(f"/v1/pipelines/{name}/train", json=body)


def problem(status: int, detail: str, slug: str = "invalid-input", **extra: Any) -> httpx.Response:
    body = {"type": f"https://seam.dev/problems/{slug}", "title": slug, "status": status, "detail": detail, **extra}
    return httpx.Response(status, content=json.dumps(body), headers={"content-type": PROBLEM})


def contract_id(contract: TensorContract) -> str:
    return hashlib.sha256(contract.model_dump_json().encode()).hexdigest()


class FakeUpstream:
    """Counts calls by route; ``fault(request)`` may answer (or raise) instead of the fake."""

    def __init__(self) -> None:
        self.calls: Counter[str] = Counter()
        self.fault: Fault | None = None
        self.delay = 0.0

    async def handler(self, request: httpx.Request) -> httpx.Response:
        route = f"{request.method} {request.url.path}"
        self.calls[route] += 1
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.fault is not None:
            answer = self.fault(request)
            if answer is not None:
                return answer
        return self.route(request)

    def route(self, request: httpx.Request) -> httpx.Response:
        raise NotImplementedError

    def transport(self) -> httpx.MockTransport:
        return httpx.MockTransport(self.handler)


class FakeEncoder(FakeUpstream):
    """An encoder whose vectors are a deterministic function of the text and the model name."""

    def __init__(self, model: str = "fake-encoder", dim: int = 8, labels: list[str] | None = None) -> None:
        super().__init__()
        self.serve(model, dim, labels)

    def serve(self, model: str, dim: int, labels: list[str] | None = None, *, fingerprint_noise: float = 0.0,
              dtype: str = "float32", float32: bool = False) -> None:
        """(Re)start with another model (or the same computed in another ``dtype``): its contracts, and so
        their ids, change. ``float32``: in a ``dtype`` other than float32, offer float32 on request too
        (listed under ``float32``; its vectors differ a little from the served ones)."""
        self.model, self.dim, self.labels = model, dim, labels
        fingerprint = [self.vector(text, dim) for text in ("canary one", "canary two")]
        if fingerprint_noise:
            fingerprint = [[x + fingerprint_noise for x in row] for row in fingerprint]
        space = EmbeddingSpace(
            model_id=model,
            weights_sha256=hashlib.sha256(model.encode()).hexdigest(),
            pooling="mean",
            normalized=True,
            max_tokens=16,
            fingerprint=fingerprint,
        )
        self.contracts = {
            "embedding": TensorContract(kind="embedding", dim=dim, space=space, dtype=dtype),
            "tokens": TensorContract(kind="tokens", dim=dim, space=space, dtype=dtype),
        }
        if labels:
            self.contracts["probabilities"] = TensorContract(kind="probabilities", dim=len(labels), labels=labels, space=space)
        self.ids = {name: contract_id(c) for name, c in self.contracts.items()}
        self.float32 = {n: c.model_copy(update={"dtype": "float32"}) for n, c in self.contracts.items()
                        } if float32 and dtype != "float32" else {}
        self.float32_ids = {name: contract_id(c) for name, c in self.float32.items()}
        self.asked_float32: list[list[str]] = []  # the texts of each encode asked in float32

    def vector(self, text: str, dim: int | None = None, nudge: float = 0.0) -> list[float]:
        rng = np.random.default_rng(zlib.crc32(f"{self.model}|{text}".encode()))
        v = rng.normal(size=dim or self.dim) + nudge
        return (v / np.linalg.norm(v)).astype(np.float32).tolist()

    def features(self, texts: list[str], output: str, float32: bool = False) -> np.ndarray | Ragged:
        if float32:
            return np.array([self.vector(t, nudge=1e-3) for t in texts], np.float32)
        if output == "tokens":
            return Ragged.from_rows([np.array([self.vector(w) for w in t.split()], np.float32) for t in texts])
        if output == "probabilities":
            logits = np.array([self.vector(t, len(self.labels or [])) for t in texts], np.float32)
            e = np.exp(logits)
            return (e / e.sum(axis=1, keepdims=True)).astype(np.float32)
        return np.array([self.vector(t) for t in texts], np.float32)

    def route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/readyz":
            return httpx.Response(200, json={"status": "ready", "model": self.model})
        if path == "/v1/outputs":
            outputs = {n: {"id": self.ids[n], "contract": c.model_dump(mode="json")} for n, c in self.contracts.items()}
            float32 = {n: {"id": self.float32_ids[n], "contract": c.model_dump(mode="json")} for n, c in self.float32.items()}
            return httpx.Response(200, json={"model": self.model, "outputs": outputs, "float32": float32})
        if path == "/v1/encode":
            body = json.loads(request.content)
            output = body["output"]
            if output not in self.contracts:
                return problem(422, f"no {output} output", "output-unavailable")
            if any(not t.strip() for t in body["texts"]):
                return problem(422, "an empty text")
            float32 = body.get("precision") == "float32" and output in self.float32
            if float32:
                self.asked_float32.append(body["texts"])
            tensor = self.features(body["texts"], output, float32)
            ids = self.float32_ids if float32 else self.ids
            meta = {"model": self.model, "output": output, "contract_id": ids[output],
                    "truncated": [len(t.split()) > 16 for t in body["texts"]], "token_counts": [1] * len(body["texts"])}
            return httpx.Response(
                200, content=encode_binary(tensor, meta),
                headers={"content-type": BINARY_CONTENT_TYPE, "X-Seam-Contract": ids[output]},
            )
        return problem(404, f"no route {path}", "not-found")


class FakeClassifier(FakeUpstream):
    """Stores version records; predicts by a fixed rule (row i -> class i mod k, probability 0.7)."""

    def __init__(self) -> None:
        super().__init__()
        self.models: dict[str, list[dict[str, Any]]] = {}
        self.fitted: dict[tuple[str, int], Any] = {}  # (name, version) -> features
        self.predicted: list[tuple[str, int, Any]] = []
        self.references: dict[tuple[str, int], dict[str, Any]] = {}  # kept texts, as the real one keeps them
        self.shift = 0  # predictions move this many classes on: a version that no longer agrees with its fit

    def add(self, name: str, input_contract: TensorContract, source: Any, classes: list[str], **extra: Any) -> dict:
        """A version fitted behind the gateway's back (straight on the classifier)."""
        versions = self.models.setdefault(name, [])
        record = {
            "name": name, "version": len(versions) + 1, "estimator": extra.pop("estimator", "logistic_regression"),
            "params": {}, "input_contract": input_contract.model_dump(mode="json"), "source": source,
            "classes": classes, "metrics": {"train_accuracy": 1.0}, "data_sha256": "0" * 64,
            "created_at": f"2024-01-01T00:00:{len(versions):02d}Z", **extra,
        }
        versions.append(record)
        return record

    def rule(self, rows: int, k: int) -> np.ndarray:
        probabilities = np.full((rows, k), 0.3 / max(k - 1, 1), np.float32)
        probabilities[np.arange(rows), (np.arange(rows) + self.shift) % k] = 0.7
        return probabilities

    def route(self, request: httpx.Request) -> httpx.Response:
        path = request.url.path
        if path == "/readyz":
            return httpx.Response(200, json={"status": "ready"})
        if path == "/v1/models" and request.method == "GET":
            models = [{"name": n, "latest": v[-1], "versions": [r["version"] for r in v]} for n, v in self.models.items()]
            return httpx.Response(200, json={"models": models})
        m = re.fullmatch(r"/v1/models/([^/]+)(?:/(fit|predict|latest|versions/(\d+)(/reference)?))?", path)
        if not m:
            return problem(404, f"no route {path}", "not-found")
        name, action, number = m.group(1), m.group(2), m.group(3)
        versions = self.models.get(name, [])
        if action == "fit":
            frame = decode_binary(request.content)
            meta = frame.meta
            contract = TensorContract.model_validate(meta["contract"])
            estimator = meta["estimator"] or {"tokens": "mean_pooling", "probabilities": "gaussian_nb"}.get(
                contract.kind, "logistic_regression")
            if estimator not in ("logistic_regression", "gaussian_nb", "attention_pooling", "mean_pooling"):
                return problem(422, f"unknown estimator {estimator}", "incompatible-estimator")
            classes = sorted(set(meta["labels"]))
            texts = meta.get("texts")
            retained = {"texts": len(texts), "reference_sample": min(len(texts), meta["reference_sample"])} if texts else None
            record = self.add(name, contract, meta["source"], classes, estimator=estimator, retained=retained)
            self.fitted[(name, record["version"])] = frame.tensor
            if retained:  # the first rows, with the probabilities the fixed rule gives them
                sample = texts[: retained["reference_sample"]]
                self.references[(name, record["version"])] = {
                    "texts": sample, "classes": classes, "probabilities": self.rule(len(sample), len(classes)).tolist()}
            return httpx.Response(201, json=record)
        if not versions:
            return problem(404, f"no model named {name}", "model-not-found")
        if action is None and request.method == "DELETE":
            del self.models[name]
            return httpx.Response(204)
        if action is None:
            return httpx.Response(200, json={"name": name, "latest": versions[-1], "versions": versions})
        if action == "latest":
            return httpx.Response(200, json=versions[-1])
        if number is not None:
            if int(number) > len(versions):
                return problem(404, f"{name} has no version {number}", "model-not-found")
            if m.group(4):
                kept = self.references.get((name, int(number)))
                if kept is None:
                    return problem(404, f"{name} v{number} kept no training data", "no-retained-data")
                return httpx.Response(200, json=kept)
            return httpx.Response(200, json=versions[int(number) - 1])
        # predict
        version = int(request.url.params.get("version", len(versions)))
        record = versions[version - 1]
        frame = decode_binary(request.content)
        width = frame.tensor.dim if isinstance(frame.tensor, Ragged) else frame.tensor.shape[1]
        if width != record["input_contract"]["dim"]:
            return problem(422, f"features are {width} wide, expected {record['input_contract']['dim']}", "feature-mismatch")
        self.predicted.append((name, version, frame.tensor))
        classes = record["classes"]
        k, rows = len(classes), len(frame.tensor)
        probabilities = self.rule(rows, k)
        labels = [classes[i] for i in probabilities.argmax(axis=1)]
        meta = {"name": name, "version": version, "classes": classes, "labels": labels}
        return httpx.Response(200, content=encode_binary(probabilities, meta), headers={"content-type": BINARY_CONTENT_TYPE})
