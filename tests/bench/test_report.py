"""The benchmark's verdicts: each target against the limit measured in the same moments as its cell."""

from __future__ import annotations

from bench.run import report


def _row(target: str, per: int, clients: int, throughput: float, **extra) -> dict:
    return {"target": target, "texts_per_request": per, "concurrency": clients, "throughput": throughput,
            "p50_ms": 100.0, "p95_ms": 120.0, "p99_ms": 130.0, "errors": 0, "loadgen_cpu_pct": 1.0,
            "peak_rss_mb": {"encoder_service": 600.0}, **extra}


def _results(rows: list[dict]) -> dict:
    limit = {"throughput": 300.0, "single_p50_ms": 12.0, "single_p95_ms": 14.0, "peak_rss_mb": 500.0,
             "runs": [{"throughput": 240.0, "single_p50_ms": 13.0}, {"throughput": 300.0, "single_p50_ms": 12.0}]}
    return {"command": "python -m bench.run", "seconds": 3, "max_requests": 3000, "loadavg": [0.1, 0.2],
            "precisions": {"float32": {"limit": limit, "rows": rows, "repeat_rss_mb": []}}}


def _verdict(text: str, target: str) -> str:
    return next(line for line in text.splitlines() if f"| {target} " in line and line.startswith("| torch"))


def test_throughput_targets_are_checked_against_the_limit_beside_their_cell():
    text = report(_results([
        # 210 texts/s: 0.70 of the better run (300) would miss, but the limit beside the cell made 250 at best.
        _row("encoder", 1, 32, 210.0, limit_beside_tps=250.0, limit_beside_runs=[240.0, 260.0]),
        _row("encoder", 16, 32, 240.0, limit_beside_tps=300.0, limit_beside_runs=[300.0, 300.0]),
    ]))
    assert "| 0.84 | met |" in _verdict(text, "encoder 32 x 1 text(s) / limit beside")
    assert "| 0.80 | NOT met |" in _verdict(text, "encoder 32 x 16 text(s) / limit beside")
    # The table keeps the ratio to the better run too, beside the one the verdict uses.
    assert "| encoder | 1 | 32 | 210 | 0.70 | 250 | 0.84 |" in text


def test_a_cell_measured_without_the_limit_beside_falls_back_to_the_better_run():
    text = report(_results([_row("encoder", 1, 32, 150.0), _row("gateway", 1, 32, 195.0)]))
    assert "| 0.50 | NOT met |" in _verdict(text, "encoder 32 x 1 text(s) / limit |")
    assert "| 0.65 | met |" in _verdict(text, "gateway 32 x 1 text(s) / limit |")


def _two_precisions() -> dict:
    """A run of both precisions with the peer, the GEMM and the labels: 100 MFLOP per text, GEMM 200 GFLOP/s."""
    def precision(limit_tps, gemm, encoder_16, encoder_1, gateway_1, peer_16, peer_1, labels, peak):
        limit = {"throughput": limit_tps, "single_p50_ms": 8.0, "single_p95_ms": 9.0, "peak_rss_mb": 500.0}
        rows = [_row("encoder", 16, 32, encoder_16, limit_beside_tps=limit_tps, peak_rss_mb={"encoder_service": peak}),
                _row("encoder", 1, 32, encoder_1),
                _row("gateway", 1, 32, gateway_1, limit_beside_tps=limit_tps),
                {**_row("encoder", 1, 1, 100.0), "p50_ms": 7.5, "paired_limit_p50_ms": 8.0},
                {**_row("gateway", 1, 1, 80.0), "p50_ms": 13.0, "paired_limit_p50_ms": 8.0},
                _row("infinity", 16, 32, peer_16, peak_rss_mb={"infinity": 700.0}),
                _row("infinity", 1, 32, peer_1, peak_rss_mb={"infinity": 700.0})]
        return {"limit": limit, "rows": rows, "repeat_rss_mb": [], "labels": labels, "peer_skipped": None,
                "hardware": {"gflops": gemm, "threads": 2, "shape": [2048, 384, 1536], "runs": [gemm, gemm - 10]}}
    return {"command": "python -m bench.run", "seconds": 3, "max_requests": 3000, "loadavg": [0.1, 0.2],
            "workload": {"flops_per_text": 100e6, "mean_tokens": 4.0, "flops_per_token_linear": 21e6},
            "precisions": {"float32": precision(400.0, 100.0, 500.0, 450.0, 300.0, 350.0, 160.0, ["a", "b", "a", "c"], 650.0),
                           "bfloat16": precision(900.0, 200.0, 1000.0, 900.0, 600.0, 800.0, 340.0, ["a", "b", "b", "c"], 690.0)}}


def _target(text: str, name: str) -> str:
    return next(line for line in text.splitlines() if line.startswith(f"| {name}"))


def test_each_cell_has_its_model_flop_rate_as_a_fraction_of_the_gemm_rate():
    text = report(_two_precisions())
    # bfloat16: 1,000 texts/s x 100 MFLOP = 100 GFLOP/s, half the GEMM's 200.
    assert "| encoder | 16 | 32 | 1000 |" in text
    assert next(line for line in text.splitlines() if line.startswith("| encoder | 16 | 32 | 1000 |")).endswith("| 100 | 0.50 |")
    assert "runs at **200 GFLOP/s** on 2 threads" in text
    assert "| infinity | 16 | 32 | 800 |" in text  # the peer's rows in the same table


def test_the_issue_targets_are_computed_in_one_place():
    text = report(_two_precisions())
    assert "| 2.50 (1000 / 400) | met |" in _target(text, "bfloat16 encoder 32 x 16 / float32 in-process limit")
    assert "| 1.11 | met |" in _target(text, "bfloat16 encoder 32 x 16 / bfloat16 in-process limit beside")
    assert "| 0.67 | met |" in _target(text, "bfloat16 gateway 32 x 1 / bfloat16 in-process limit beside")
    # seam's best (bfloat16, 900) over the peer's best (bfloat16, 340) at 32 x 1; 1000 / 800 at 32 x 16.
    assert "| 2.65 (900 bfloat16 / 340 bfloat16) | met |" in _target(text, "seam encoder / Infinity at 32 x 1")
    assert "| 1.25 (1000 bfloat16 / 800 bfloat16) | NOT met |" in _target(text, "seam encoder / Infinity at 32 x 16")
    assert "| 0.50 (GEMM 200 GFLOP/s) | NOT met |" in _target(text, "bfloat16 encoder 32 x 16: model FLOP rate / GEMM rate")
    assert "| -0.5 ms (7.5 vs 8.0) | met |" in _target(text, "lone text p50 through the encoder")
    assert "| +5.0 ms (13.0 vs 8.0) | NOT met |" in _target(text, "lone text p50 through the gateway")
    assert "| 0.750 of 4 | NOT met |" in _target(text, "pipeline labels, bfloat16 vs float32")
    assert "| 690 MB | met |" in _target(text, "bfloat16 encoder peak RSS")


def test_the_targets_across_measures_use_the_figures_taken_beside_the_cell():
    """The machine drifts: the float32 limit and the GEMM rate taken beside the bfloat16 cell are what
    the verdicts use when present; the peer's and seam's cells each over the limit beside it are shown."""
    results = _two_precisions()
    rows = results["precisions"]["bfloat16"]["rows"]
    rows[0].update(float32_limit_tps_beside=480.0, gemm_gflops_beside=160.0)  # encoder 32 x 16: 1,000 texts/s
    peer_1 = next(r for r in rows if (r["target"], r["texts_per_request"], r["concurrency"]) == ("infinity", 1, 32))
    peer_1["limit_beside_tps"] = 680.0  # the peer's cell ran while the machine was at 680/900 of seam's cell's pace
    seam_1 = next(r for r in rows if (r["target"], r["texts_per_request"], r["concurrency"]) == ("encoder", 1, 32))
    seam_1["limit_beside_tps"] = 900.0
    text = report(results)
    assert "| 2.08 (1000 / 480) | met |" in _target(text, "bfloat16 encoder 32 x 16 / float32 in-process limit beside")
    assert "| 0.62 (GEMM 160 GFLOP/s) | met |" in _target(text, "bfloat16 encoder 32 x 16: model FLOP rate / GEMM rate beside")
    # The ratio as measured decides; over the limit beside each (900/900 over 340/680) it is shown too.
    assert "| 2.65 (900 bfloat16 / 340 bfloat16); over the limit beside each, 1.00 / 0.50 = 2.00 | met |" in _target(
        text, "seam encoder / Infinity at 32 x 1")


def test_a_run_without_the_peer_says_why_and_marks_its_targets_not_measured():
    results = _two_precisions()
    for res in results["precisions"].values():
        res["rows"] = [r for r in res["rows"] if r["target"] != "infinity"]
        res["peer_skipped"] = "Infinity's environment is absent: run `make bench-peers`"
    text = report(results)
    assert "Peer (Infinity) skipped: Infinity's environment is absent: run `make bench-peers`." in text
    assert _target(text, "seam encoder / Infinity at 32 x 1").endswith("| not measured |")
