"""Lone predict p50 through the gateway, stacks side by side: what request ids, access logging and
tracing (off) cost. Each stack is three real processes on 127.0.0.1 with a tiny BERT (so the
per-request overhead is what shows); requests alternate between the stacks, one each in turn,
so drift hits all alike.

    python -m bench.lone_overhead --baseline /path/to/an/older/checkout [--rounds 15 --per-round 20]

Stacks: ``baseline`` (the older checkout's code), ``text`` (this checkout, default text logs, tracing
off), ``json`` (this checkout, ``*_LOG_FORMAT=json``), and with ``--traced`` ``traced`` (tracing on,
exporting to a receiver that drops the payloads).
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
import threading

import httpx

from seam.stack import free_port, wait_ready

ROOT = Path(__file__).resolve().parent.parent
PREFIX = {"encoder_service": "ENCODER_", "classifier_service": "CLASSIFIER_", "gateway": "GATEWAY_"}


def start(module: str, cwd: Path, env: dict[str, str], log: Path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    full = {**os.environ, **env, f"{PREFIX[module]}PORT": str(port), f"{PREFIX[module]}HOST": "127.0.0.1"}
    with log.open("ab") as out:
        proc = subprocess.Popen([sys.executable, "-m", module], cwd=cwd, env=full, stdout=out, stderr=subprocess.STDOUT)
    return proc, f"http://127.0.0.1:{port}"


def stack(name: str, cwd: Path, model: Path, var: Path, extra: dict[str, str]) -> tuple[list[subprocess.Popen], str]:
    logs = {m: var / f"{name}-{m}.log" for m in PREFIX}
    enc, enc_url = start("encoder_service", cwd, {"ENCODER_MODEL": str(model), "ENCODER_THREADS": "1", **extra}, logs["encoder_service"])
    clf, clf_url = start("classifier_service", cwd, {"CLASSIFIER_STORE": str(var / f"{name}-models"), **extra}, logs["classifier_service"])
    gw, gw_url = start("gateway", cwd, {"GATEWAY_ENCODER_URL": enc_url, "GATEWAY_CLASSIFIER_URL": clf_url, **extra}, logs["gateway"])
    for proc, url in ((enc, enc_url), (clf, clf_url), (gw, gw_url)):
        wait_ready(url, proc, timeout=180, name=name, log_tail=lambda: "")
    train_bench(gw_url)
    return [gw, clf, enc], gw_url


def train_bench(gateway: str) -> None:
    """The pipeline every stack serves: ``bench``, fitted on a dozen texts."""
    texts = [f"sample text {i}" for i in range(12)]
    r = httpx.post(f"{gateway}/v1/pipelines/bench/train", json={"texts": texts, "labels": ["a", "b", "c"] * 4}, timeout=120)
    r.raise_for_status()


def lone_predicts(urls: dict[str, str], count: int) -> dict[str, list[float]]:
    """``count`` lone predict latencies (ms) of each stack, after a warm-up: one request to each stack in
    turn, since on a shared machine load swings within a second, so drift hits all alike."""
    samples: dict[str, list[float]] = {name: [] for name in urls}
    clients = {name: httpx.Client(base_url=url, timeout=30) for name, url in urls.items()}
    for client in clients.values():
        for _ in range(20):
            client.post("/v1/pipelines/bench/predict", json={"texts": ["warm up"]}).raise_for_status()
    for _ in range(count):
        for name, client in clients.items():
            t = time.perf_counter()
            client.post("/v1/pipelines/bench/predict", json={"texts": ["where is my parcel"]}).raise_for_status()
            samples[name].append((time.perf_counter() - t) * 1000)
    return samples


def stop(procs: list[subprocess.Popen]) -> None:
    for proc in procs:
        proc.terminate()
    for proc in procs:
        proc.wait(timeout=30)


def drop_receiver() -> ThreadingHTTPServer:
    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:  # noqa: N802
            self.rfile.read(int(self.headers.get("Content-Length", 0)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *args: object) -> None:
            return None

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    return server


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--baseline", type=Path, required=True, help="a checkout of the code to compare with")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--traced", action="store_true")
    args = parser.parse_args()
    from tests.models import make_bert

    var = Path(tempfile.mkdtemp(prefix="seam-lone-"))
    model = make_bert(var / "bert")
    otel_off = {name: "" for name in os.environ if name.startswith("OTEL_")}
    configs = {"baseline": (args.baseline, otel_off), "text": (ROOT, otel_off),
               "json": (ROOT, {**otel_off, **{f"{p}LOG_FORMAT": "json" for p in PREFIX.values()}})}
    receiver = None
    if args.traced:
        receiver = drop_receiver()
        configs["traced"] = (ROOT, {"OTEL_EXPORTER_OTLP_ENDPOINT": f"http://127.0.0.1:{receiver.server_port}"})
    procs, urls = [], {}
    try:
        for name, (cwd, extra) in configs.items():
            started, urls[name] = stack(name, cwd, model, var, extra)
            procs += started
        for name, values in lone_predicts(urls, args.rounds * args.per_round).items():
            values.sort()
            p90 = values[int(len(values) * 0.9)]
            print(f"{name:9s} n={len(values)}  p50 {statistics.median(values):6.2f} ms  p90 {p90:6.2f} ms")
    finally:
        stop(procs)
        if receiver is not None:
            receiver.shutdown()
            receiver.server_close()


if __name__ == "__main__":
    main()
