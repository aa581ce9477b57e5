"""What a second registered encoder costs a pipeline served by the first: lone predict p50 and 32 x 1
throughput through two gateways side by side, one with one encoder, one with two (each stack its own
three real processes on 127.0.0.1 with a tiny BERT, so the gateway's own overhead is what shows).
Lone requests alternate between the stacks; throughput cells alternate too, each bounded in count.

    python -m bench.encoders_overhead [--rounds 10 --per-round 20 --requests 640]
"""

from __future__ import annotations

import argparse
import asyncio
import statistics
import tempfile
import time
from pathlib import Path

import httpx

from bench.lone_overhead import lone_predicts, start, stop, train_bench
from seam.stack import wait_ready


def stack(name: str, model: Path, var: Path, encoders: int) -> tuple[list, str]:
    procs, urls = [], []
    for i in range(encoders):
        proc, url = start("encoder_service", Path.cwd(), {"ENCODER_MODEL": str(model)}, var / f"{name}-enc{i}.log")
        procs.append(proc)
        urls.append(url)
    clf, clf_url = start("classifier_service", Path.cwd(), {"CLASSIFIER_STORE": str(var / f"{name}-models")}, var / f"{name}-clf.log")
    registered = ",".join(f"e{i}={url}" for i, url in enumerate(urls))
    gw, gw_url = start("gateway", Path.cwd(), {"GATEWAY_ENCODERS": registered, "GATEWAY_CLASSIFIER_URL": clf_url},
                       var / f"{name}-gw.log")
    procs += [clf, gw]
    for proc, url in zip(procs, urls + [clf_url, gw_url]):
        wait_ready(url, proc, timeout=180, name=name, log_tail=lambda: "")
    train_bench(gw_url)
    return procs, gw_url


async def throughput(url: str, clients: int, requests: int) -> float:
    left = requests

    async def client(http: httpx.AsyncClient) -> None:
        nonlocal left
        while left > 0:
            left -= 1
            (await http.post("/v1/pipelines/bench/predict", json={"texts": ["where is my parcel"]})).raise_for_status()

    async with httpx.AsyncClient(base_url=url, timeout=60, limits=httpx.Limits(max_connections=clients)) as http:
        start_s = time.perf_counter()
        await asyncio.gather(*(client(http) for _ in range(clients)))
        return requests / (time.perf_counter() - start_s)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--per-round", type=int, default=20)
    parser.add_argument("--requests", type=int, default=640)
    args = parser.parse_args()
    from tests.models import make_bert

    var = Path(tempfile.mkdtemp(prefix="seam-encoders-"))
    model = make_bert(var / "bert")
    procs: list = []
    try:
        urls = {}
        for name, count in (("one encoder", 1), ("two encoders", 2)):
            started, urls[name] = stack(name.replace(" ", "-"), model, var, count)
            procs += started
        lone = lone_predicts(urls, args.rounds * args.per_round)
        rates: dict[str, list[float]] = {name: [] for name in urls}
        for _ in range(2):
            for name, url in urls.items():
                rates[name].append(asyncio.run(throughput(url, 32, args.requests)))
        for name in urls:
            print(f"{name:13s} lone p50 {statistics.median(lone[name]):6.2f} ms (n={len(lone[name])})   "
                  f"32 x 1: {', '.join(f'{r:.0f}' for r in rates[name])} texts/s")
    finally:
        stop(procs)


if __name__ == "__main__":
    main()
