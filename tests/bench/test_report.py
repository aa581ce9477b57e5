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
