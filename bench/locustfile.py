"""Train once, predict many, through the gateway. Loopback only; bounded by --run-time.

    make run                                   # in one terminal: the stack on 127.0.0.1
    .venv/bin/locust -f bench/locustfile.py --headless --host http://127.0.0.1:8000 \
        --users 32 --spawn-rate 8 --run-time 60s --csv var/locust

Each simulated user sends one to sixteen generated support sentences per request to the pipeline
`locust-intents`, which the first user to start trains from seam/data/support_intents.csv.
"""

from __future__ import annotations

import random
import threading

from locust import HttpUser, between, events, task

from bench.workload import sentences, training_data

PIPELINE = "locust-intents"
SENTENCES = sentences(2048, seed=1)
_trained = threading.Event()


@events.test_start.add_listener
def train_once(environment, **_kwargs) -> None:
    """Train (once per run, unless the pipeline exists) before the users start predicting."""
    import httpx

    if httpx.get(f"{environment.host}/v1/pipelines/{PIPELINE}", timeout=60).status_code == 200:
        _trained.set()
        return
    texts, labels = training_data()
    response = httpx.post(f"{environment.host}/v1/pipelines/{PIPELINE}/train", timeout=600,
                          json={"texts": texts, "labels": labels, "estimator": "logistic_regression", "feature": "embedding"})
    response.raise_for_status()
    _trained.set()


class PipelineUser(HttpUser):
    wait_time = between(0, 0.05)

    @task(4)
    def predict_one(self) -> None:
        self.client.post(f"/v1/pipelines/{PIPELINE}/predict", json={"texts": [random.choice(SENTENCES)]},
                         name="predict 1 text")

    @task(1)
    def predict_sixteen(self) -> None:
        self.client.post(f"/v1/pipelines/{PIPELINE}/predict", json={"texts": random.sample(SENTENCES, 16)},
                         name="predict 16 texts")
