"""The soak: mixed train and predict traffic through the gateway for a bounded time, then checks.

    python -m bench.soak --seconds 300            # the whole stack on free loopback ports, MiniLM
    python -m bench.soak --seconds 15 --model PATH --concurrency 4

It starts the three services (seam.stack.Stack, a temporary var directory, internal tokens and an
API key configured), then ``--concurrency`` clients send, back to back, mostly predictions (one to
eight texts, to the latest version or to a pinned one) and now and then a training of a new version
(``--train-share``). Right after each training it records that version's answer to a fixed probe.

Afterwards: every trained version must answer the probe as it did right after it was trained
(same labels, probabilities within 1e-4: dynamic batching may pad differently), no request may have
failed, and each process's resident memory must not have grown by 10 % or more between the end of
the warm-up and the end of the run. Prints a JSON summary (and writes it with ``--out``); exits 1
when a check fails. Loopback only; bounded in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import random
import secrets
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from bench.workload import rss_mb, sentences, training_data
from seam.stack import free_port

PIPELINES = ("soak-intents", "soak-billing")
ESTIMATORS = ("logistic_regression", "gaussian_nb")
PROBE = ["I was charged twice this month", "my parcel never arrived", "please reset my password",
         "the invoice shows the wrong address"]
PROBABILITY_TOLERANCE = 1e-4
RSS_GROWTH_LIMIT = 0.10


@dataclass
class Trained:
    name: str
    version: int
    probe: dict[str, Any]


@dataclass
class Tally:
    requests: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    samples: list[str] = field(default_factory=list)
    latencies_ms: dict[str, list[float]] = field(default_factory=lambda: {"predict": [], "train": []})
    trained: list[Trained] = field(default_factory=list)

    def error(self, what: str, detail: str) -> None:
        self.errors[what] += 1
        if len(self.samples) < 10:
            self.samples.append(f"{what}: {detail[:300]}")


class Soak:
    """Traffic against a running gateway; ``pids`` are the processes whose memory is watched."""

    def __init__(self, gateway_url: str, pids: dict[str, int], *, api_key: str | None = None, concurrency: int = 8,
                 train_share: float = 0.02, train_rows: int = 120, seed: int = 0) -> None:
        self.url = gateway_url.rstrip("/")
        self.pids = pids
        self.headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.concurrency = concurrency
        self.train_share = train_share
        self.train_rows = train_rows
        self.rng = random.Random(seed)
        self.texts, self.labels = training_data()
        self.sentences = sentences(512, seed=seed + 1)
        self.tally = Tally()
        self.training = asyncio.Lock()  # one training at a time: it is the heavy call

    def rss(self) -> dict[str, float]:
        return {name: round(rss_mb(pid), 1) for name, pid in self.pids.items()}

    async def _call(self, client: httpx.AsyncClient, kind: str, path: str, body: dict) -> httpx.Response | None:
        self.tally.requests[kind] += 1
        started = time.perf_counter()
        try:
            response = await client.post(path, json=body)
        except httpx.HTTPError as exc:
            self.tally.error(kind, f"{type(exc).__name__}: {exc}")
            return None
        self.tally.latencies_ms[kind.split()[0]].append((time.perf_counter() - started) * 1000)
        if response.status_code >= 300:
            self.tally.error(kind, f"{response.status_code} {response.text}")
            return None
        return response

    async def train(self, client: httpx.AsyncClient, name: str) -> None:
        rows = self.rng.sample(range(len(self.texts)), min(self.train_rows, len(self.texts)))
        body = {"texts": [self.texts[i] for i in rows], "labels": [self.labels[i] for i in rows],
                "estimator": self.rng.choice(ESTIMATORS), "feature": "embedding"}
        async with self.training:
            trained = await self._call(client, "train", f"/v1/pipelines/{name}/train", body)
        if trained is None:
            return
        version = trained.json()["version"]
        probe = await self._call(client, "predict pinned", f"/v1/pipelines/{name}/predict?version={version}",
                                 {"texts": PROBE})
        if probe is not None:
            self.tally.trained.append(Trained(name, version, probe.json()))

    async def predict(self, client: httpx.AsyncClient) -> None:
        texts = self.rng.sample(self.sentences, self.rng.randint(1, 8))
        if self.tally.trained and self.rng.random() < 0.3:
            pinned = self.rng.choice(self.tally.trained)
            await self._call(client, "predict pinned", f"/v1/pipelines/{pinned.name}/predict?version={pinned.version}",
                             {"texts": texts})
        else:
            await self._call(client, "predict latest", f"/v1/pipelines/{self.rng.choice(PIPELINES)}/predict",
                             {"texts": texts})

    async def _client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(base_url=self.url, headers=self.headers, timeout=120,
                                 limits=httpx.Limits(max_connections=self.concurrency + 2))

    async def run(self, seconds: float, warmup_s: float) -> dict[str, Any]:
        async with await self._client() as client:
            for name in PIPELINES:  # every pipeline exists before traffic starts
                await self.train(client, name)
            rss_ready = self.rss()
            started = time.monotonic()
            deadline = started + seconds
            rss_warm: dict[str, float] = {}
            timeline: list[dict[str, float]] = []

            async def worker() -> None:
                while time.monotonic() < deadline:
                    if self.rng.random() < self.train_share and not self.training.locked():
                        await self.train(client, self.rng.choice(PIPELINES))
                    else:
                        await self.predict(client)

            async def sampler() -> None:
                await asyncio.sleep(min(warmup_s, seconds))
                rss_warm.update(self.rss())
                while time.monotonic() + 30 < deadline:  # the trend, every 30 s: a plateau or a slope
                    await asyncio.sleep(30)
                    timeline.append({"at_s": round(time.monotonic() - started), **self.rss()})

            await asyncio.gather(sampler(), *(worker() for _ in range(self.concurrency)))
            wall = time.monotonic() - started
            rss_end = self.rss()
            drift = await self.verify(client)
        result = self.summary(wall, rss_ready, rss_warm or rss_ready, rss_end, drift)
        result["rss_mb"]["timeline"] = timeline
        return result

    async def verify(self, client: httpx.AsyncClient) -> list[str]:
        """Every trained version answers the probe as it did right after training."""
        drift = []
        for trained in self.tally.trained:
            response = await client.post(f"/v1/pipelines/{trained.name}/predict?version={trained.version}",
                                         json={"texts": PROBE})
            if response.status_code != 200:
                drift.append(f"{trained.name} v{trained.version}: {response.status_code} {response.text[:200]}")
                continue
            now, then = response.json()["predictions"], trained.probe["predictions"]
            for a, b in zip(now, then):
                worst = max(abs(a["probabilities"][c] - b["probabilities"][c]) for c in b["probabilities"])
                if a["label"] != b["label"] or worst > PROBABILITY_TOLERANCE:
                    drift.append(f"{trained.name} v{trained.version}: {b['label']} -> {a['label']} (max diff {worst:.2g})")
        return drift

    def summary(self, wall: float, ready: dict, warm: dict, end: dict, drift: list[str]) -> dict[str, Any]:
        def pct(values: list[float], q: float) -> float | None:
            values = sorted(values)
            return round(values[min(len(values) - 1, int(q / 100 * len(values)))], 1) if values else None

        growth = {name: round((end[name] - warm[name]) / warm[name], 4) for name in end}
        requests = sum(self.tally.requests.values())
        checks = {
            "no_errors": not self.tally.errors,
            "versions_predict_the_same": not drift and len(self.tally.trained) >= len(PIPELINES),
            "rss_growth_under_10pct": all(g < RSS_GROWTH_LIMIT for g in growth.values()),
        }
        return {
            "seconds": round(wall, 1),
            "concurrency": self.concurrency,
            "requests": requests,
            "requests_per_s": round(requests / wall, 1) if wall else None,
            "by_kind": dict(self.tally.requests),
            "errors": sum(self.tally.errors.values()),
            "error_samples": self.tally.samples,
            "latency_ms": {kind: {"p50": pct(v, 50), "p99": pct(v, 99)} for kind, v in self.tally.latencies_ms.items()},
            "versions_trained": len(self.tally.trained),
            "versions_drifted": drift,
            "rss_mb": {"ready": ready, "after_warmup": warm, "end": end},
            "rss_growth_after_warmup": growth,
            "checks": checks,
            "ok": all(checks.values()),
        }


def stack_env(model: str | None, api_key: str, token: str) -> dict[str, str]:
    env = {"ENCODER_PORT": str(free_port()), "CLASSIFIER_PORT": str(free_port()), "GATEWAY_PORT": str(free_port()),
           "ENCODER_INTERNAL_TOKEN": token, "CLASSIFIER_INTERNAL_TOKEN": token, "GATEWAY_INTERNAL_TOKEN": token,
           "GATEWAY_API_KEYS": api_key, "ENCODER_THREADS": "1", "CLASSIFIER_TORCH_THREADS": "1",
           "GATEWAY_LOG_LEVEL": "warning", "ENCODER_LOG_LEVEL": "warning", "CLASSIFIER_LOG_LEVEL": "warning"}
    if model:
        env["ENCODER_MODEL"] = model
    return env


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=300.0, help="traffic time (default 300)")
    parser.add_argument("--warmup", type=float, default=None, help="seconds before the RSS baseline (default: 10%%, at most 30)")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--train-share", type=float, default=0.02, help="share of requests that train a new version")
    parser.add_argument("--train-rows", type=int, default=120, help="rows of the sample data per training")
    parser.add_argument("--model", default=None, help="encoder model folder (default: the shipped all-MiniLM-L6-v2)")
    parser.add_argument("--out", type=Path, default=None, help="also write the JSON summary here")
    args = parser.parse_args(argv)

    from seam.stack import Stack

    api_key, token = secrets.token_urlsafe(24), secrets.token_urlsafe(24)
    with tempfile.TemporaryDirectory(prefix="seam-soak-") as var:
        stack = Stack(var=Path(var), env=stack_env(args.model, api_key, token))
        try:
            stack.start()
            pids = {c.module: c.proc.pid for c in stack.children}
            soak = Soak(stack.url("gateway"), pids, api_key=api_key, concurrency=args.concurrency,
                        train_share=args.train_share, train_rows=args.train_rows)
            warmup = args.warmup if args.warmup is not None else min(30.0, args.seconds / 10)
            result = asyncio.run(soak.run(args.seconds, warmup))
            crashed = stack.failed()
            if crashed is not None:
                result["ok"] = False
                result["crashed"] = crashed.module
        finally:
            stack.stop()
    text = json.dumps(result, indent=2)
    print(text)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(text + "\n")
    return 0 if result["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
