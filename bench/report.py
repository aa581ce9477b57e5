"""bench.run's report (bench/results/results.md) and plot (throughput.png), from its results.json."""

from __future__ import annotations

import math
import os
from pathlib import Path

SUFFIX = {"torch": "", "onnxruntime": "-onnx"}
PAIRED_ROUND = 10  # requests per turn in the single-client cells, then as many lone texts in-process
# Cells with a throughput target (texts per request, clients): the limit's rate is taken just before
# and after each, BESIDE_TEXTS texts each time (about a second), and the target checked against the
# better of the two: a slow moment of the limit must not flatter seam's ratio.
TARGET_CELLS = {(1, 32), (16, 32)}
BESIDE_TEXTS = 256


def ratio(rows, limit, target, per_request, concurrency):
    """A cell's throughput over the limit's: the limit's rate taken beside the cell where there is one."""
    row = next((r for r in rows if (r["target"], r["texts_per_request"], r["concurrency"]) == (target, per_request, concurrency)), None)
    if row is None:  # a partial run (--concurrency) did not measure this cell
        return float("nan"), {"throughput": float("nan"), "p50_ms": float("nan")}
    return row["throughput"] / row.get("limit_beside_tps", limit["throughput"]), row


def _seam_suffixes(rows) -> list[str]:
    return [suffix for suffix in SUFFIX.values() if any(r["target"] == "encoder" + suffix for r in rows)]


def _groups(rows) -> list[str]:
    return ["naive"] + ["seam" + suffix for suffix in _seam_suffixes(rows)] + (["infinity"] if any(r["target"] == "infinity" for r in rows) else [])


def _cell(rows, target: str, per_request: int = 1, concurrency: int = 1) -> dict | None:
    return next((r for r in rows if (r["target"], r["texts_per_request"], r["concurrency"]) == (target, per_request, concurrency)), None)


def model_gflops(row: dict, workload: dict | None) -> float:
    """The cell's model FLOP rate: texts/s x the model's FLOPs per text at the workload's token counts."""
    return row["throughput"] * workload["flops_per_text"] / 1e9 if workload else float("nan")


def _peaks(rows, group: str) -> dict[str, float]:
    """Peak RSS per process over a group's rows: ``naive``, ``seam`` (torch) or ``seam-onnx``."""
    suffix = group[len("seam"):] if group.startswith("seam") else None
    peaks: dict[str, float] = {}
    for r in rows:
        if (r["target"] == group) if suffix is None else r["target"] in ("encoder" + suffix, "gateway" + suffix):
            for name, mb in r["peak_rss_mb"].items():
                peaks[name] = max(peaks.get(name, 0), mb)
    return peaks


def report(results: dict) -> str:
    lines = ["# seam benchmark", "", f"Command: `make bench` ({results['command']}); "
             f"machine: {os.cpu_count()} cores; MiniLM-L6-v2; {results['seconds']} s of steady state (after the cell's ramp-up) or {results['max_requests']} requests per cell.",
             "", f"Load average (1 min) at start {results['loadavg'][0]:.2f}, at end {results['loadavg'][1]:.2f}: "
             "anything above ~0.5 at start means other work shared the cores and the figures are not clean.", ""]
    workload = results.get("workload")
    if workload:
        lines += [f"Workload: {workload['mean_tokens']:.1f} tokens per text on average; the model costs "
                  f"{workload['flops_per_text'] / 1e6:.0f} MFLOP per text at those counts "
                  f"({workload['flops_per_token_linear'] / 1e6:.1f} MFLOP per token in its Linear layers, plus attention: "
                  "bench/hardware.py). A cell's model GFLOP/s is its texts/s times that.", ""]
    for precision, res in results["precisions"].items():
        limit, rows = res["limit"], res["rows"]
        hardware = res.get("hardware")
        gemm = hardware["gflops"] if hardware else None
        if hardware:
            lines += [f"Hardware ({precision}): a {' x '.join(map(str, hardware['shape'][:2]))} by "
                      f"{' x '.join(map(str, hardware['shape'][1:]))} GEMM (torch.matmul) runs at **{gemm:.0f} GFLOP/s** on "
                      f"{hardware['threads']} threads (the better of two runs, before and after: "
                      + ", ".join(f"{g:.0f}" for g in hardware.get("runs", [gemm])) + "); \"of GEMM\" is a cell's model FLOP rate over it.", ""]
        if res.get("peer_skipped"):
            lines += [f"Peer (Infinity) skipped: {res['peer_skipped']}.", ""]
        lines += [f"## {precision}", "",
                  f"In-process limit (row 1): **{limit['throughput']:.0f} texts/s** at batch 32; single text p50 "
                  f"{limit['single_p50_ms']:.1f} ms; peak RSS {limit['peak_rss_mb']:.0f} MB (the better of two runs, "
                  "before and after seam's: " + ", ".join(f"{r['throughput']:.0f} texts/s and {r['single_p50_ms']:.1f} ms"
                                                           for r in limit.get("runs", [])) + ").", "",
                  "The machine's speed drifts by ±20 % from one minute to the next (the two runs of the limit "
                  "above), so each target is checked against the limit measured in the same moments as its cell:",
                  f"- single-client cells (1 text, concurrency 1) run in turns with the in-process limit, {PAIRED_ROUND} "
                  "lone texts each way; their targets are against the limit's p50 in those turns (last column);",
                  "- texts/s and the latencies are the steady state's: each client's requests from its answer when "
                  "every client has had one (the ramp-up left out) to its last answer when the cell's time is up "
                  "(the drain left out), in whole round trips;",
                  f"- cells with a throughput target (32 clients) have the limit's batch-32 rate taken just before and "
                  f"just after them, {BESIDE_TEXTS} texts each time; their targets are against the better of the two "
                  "(\"limit beside\"). \"ratio to limit\" is against the better run above, for comparison.", "",
                  "| target | texts/req | concurrency | texts/s | ratio to limit | limit beside texts/s | ratio to it | p50 ms | p95 ms | p99 ms | errors | loadgen CPU % | limit p50 in turns | model GFLOP/s | of GEMM |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        for r in rows:
            beside = (f"{r['limit_beside_tps']:.0f} | {r['throughput'] / r['limit_beside_tps']:.2f} |"
                      if "limit_beside_tps" in r else " | |")
            lines.append(f"| {r['target']} | {r['texts_per_request']} | {r['concurrency']} | {r['throughput']:.0f} | "
                         f"{r['throughput'] / limit['throughput']:.2f} | {beside} {r['p50_ms']:.1f} | {r['p95_ms']:.1f} | "
                         f"{r['p99_ms']:.1f} | {r['errors']} | {r['loadgen_cpu_pct']:.0f} | "
                         + (f"{r['paired_limit_p50_ms']:.1f} |" if "paired_limit_p50_ms" in r else " |")
                         + (f" {model_gflops(r, workload):.0f} | {model_gflops(r, workload) / gemm:.2f} |" if workload and gemm else " | |"))
        lines += ["", "Peak RSS (MB): " + "; ".join(
            f"{group}: " + ", ".join(f"{k} {v:.0f}" for k, v in _peaks(rows, group).items()) for group in _groups(rows)),
            "Encoder RSS after repeated runs (MB): " + ", ".join(f"{r['encoder_service']:.0f}" for r in res["repeat_rss_mb"]), ""]
        checks = []
        for suffix in _seam_suffixes(rows):
            backend = "onnxruntime" if suffix else "torch, the default"
            for target, per, c, goal in (("encoder", 1, 32, 0.70), ("encoder", 16, 32, 0.90), ("gateway", 1, 32, 0.60), ("gateway", 16, 32, 0.85)):
                value, row = ratio(rows, limit, target + suffix, per, c)
                against = "limit beside" if "limit_beside_tps" in row else "limit"
                checks.append(f"| {backend} | {target} {c} x {per} text(s) / {against} | ≥ {goal:.2f} | {value:.2f} | {'met' if value >= goal else 'NOT met'} |")
            for target, extra in (("encoder", 2), ("gateway", 5)):
                _, row = ratio(rows, limit, target + suffix, 1, 1)
                base = row.get("paired_limit_p50_ms")
                goal = f"≤ {base:.1f} + {extra} ms (limit in turns)" if base else f"≤ {limit['single_p50_ms']:.1f} + {extra} ms"
                bound = (base or limit["single_p50_ms"]) + extra
                checks.append(f"| {backend} | {target} single client p50 | {goal} | {row['p50_ms']:.1f} ms | {'met' if row['p50_ms'] <= bound else 'NOT met'} |")
            naive_tp = ratio(rows, limit, "naive", 1, 32)[1]["throughput"]
            enc_tp = ratio(rows, limit, "encoder" + suffix, 1, 32)[1]["throughput"]
            checks.append(f"| {backend} | encoder vs naive at 32 x 1 | ≥ 3x | {enc_tp / naive_tp:.1f}x | {'met' if enc_tp >= 3 * naive_tp else 'NOT met'} |")
            enc_peak = _peaks(rows, "seam" + suffix).get("encoder_service", float("nan"))
            checks.append(f"| {backend} | encoder peak RSS | ≤ 700 MB | {enc_peak:.0f} MB | {'met' if enc_peak <= 700 else 'NOT met'} |")
        lines += ["| seam | target | goal | measured | |", "|---|---|---|---|---|", *checks, ""]
    lines += issue19_section(results)
    lines += ["![throughput and p95 vs concurrency](throughput.png)", ""]
    return "\n".join(lines)


def _verdict(value: float, goal: float, *, at_most: bool = False) -> str:
    if value is None or math.isnan(value):
        return "not measured"
    return "met" if (value <= goal if at_most else value >= goal) else "NOT met"


def issue19_targets(results: dict) -> list[tuple[str, str, str, str]]:
    """(target, goal, measured, verdict) for the bfloat16-default issue's targets, from one run."""
    nan = float("nan")
    precisions = results["precisions"]
    fp, bf = precisions.get("float32"), precisions.get("bfloat16")
    out = []

    def tp(res, target, per, c):
        row = _cell(res["rows"], target, per, c) if res else None
        return row["throughput"] if row else nan

    bf_cell = (_cell(bf["rows"], "encoder", 16, 32) if bf else None) or {}
    bf_enc_16 = bf_cell.get("throughput", nan)
    # Against the float32 limit taken beside the cell where it was (the machine drifts), else the run's.
    fp_limit = bf_cell.get("float32_limit_tps_beside") or (fp["limit"]["throughput"] if fp else nan)
    against = "float32 in-process limit beside" if "float32_limit_tps_beside" in bf_cell else "float32 in-process limit"
    value = bf_enc_16 / fp_limit
    out.append((f"bfloat16 encoder 32 x 16 / {against}", "≥ 2.0", f"{value:.2f} ({bf_enc_16:.0f} / {fp_limit:.0f})", _verdict(value, 2.0)))
    for target, per, goal in (("encoder", 16, 1.1), ("gateway", 1, 0.6)):
        value, row = ratio(bf["rows"], bf["limit"], target, per, 32) if bf else (nan, {})
        against = "limit beside" if "limit_beside_tps" in row else "limit"
        out.append((f"bfloat16 {target} 32 x {per} / bfloat16 in-process {against}", f"≥ {goal}", f"{value:.2f}", _verdict(value, goal)))
    for per, goal in ((1, 2.5), (16, 1.6)):  # each at its best precision in this run
        seam = max(((tp(res, "encoder", per, 32), p) for p, res in precisions.items()), default=(nan, "-"), key=lambda x: -1 if math.isnan(x[0]) else x[0])
        peer = max(((tp(res, "infinity", per, 32), p) for p, res in precisions.items()), default=(nan, "-"), key=lambda x: -1 if math.isnan(x[0]) else x[0])
        value = seam[0] / peer[0]
        measured = f"{value:.2f} ({seam[0]:.0f} {seam[1]} / {peer[0]:.0f} {peer[1]})"
        # The two cells ran minutes apart: each over the limit beside it (the better of its two runs) shows
        # how much of the ratio is the machine's drift. The verdict stays on the ratio as measured.
        cells = [_cell(precisions[p]["rows"], t, per, 32) if p in precisions else None
                 for t, p in (("encoder", seam[1]), ("infinity", peer[1]))]
        if seam[1] == peer[1] and all(c and "limit_beside_tps" in c for c in cells):
            own, theirs = (c["throughput"] / c["limit_beside_tps"] for c in cells)
            measured += f"; over the limit beside each, {own:.2f} / {theirs:.2f} = {own / theirs:.2f}"
        out.append((f"seam encoder / Infinity at 32 x {per}, each at its best precision", f"≥ {goal}", measured, _verdict(value, goal)))
    workload, hardware = results.get("workload"), (bf or {}).get("hardware")
    gemm = bf_cell.get("gemm_gflops_beside") or (hardware["gflops"] if hardware else nan)
    value = bf_enc_16 * workload["flops_per_text"] / 1e9 / gemm if workload else nan
    against = "GEMM rate beside" if "gemm_gflops_beside" in bf_cell else "GEMM rate"
    out.append((f"bfloat16 encoder 32 x 16: model FLOP rate / {against}", "≥ 0.6", f"{value:.2f} (GEMM {gemm:.0f} GFLOP/s)",
                _verdict(value, 0.6)))
    default = bf or fp
    for target, extra in (("encoder", 0.0), ("gateway", 4.0)):
        row = _cell(default["rows"], target) if default else None
        base = row.get("paired_limit_p50_ms") if row else None
        value = row["p50_ms"] - base if row and base else nan
        out.append((f"lone text p50 through the {target} - in-process (in turns)", f"≤ +{extra:.0f} ms",
                    f"{value:+.1f} ms ({row['p50_ms']:.1f} vs {base:.1f})" if row and base else "nan", _verdict(value, extra, at_most=True)))
    a, b = (fp or {}).get("labels") or [], (bf or {}).get("labels") or []
    value = sum(x == y for x, y in zip(a, b)) / len(a) if a and len(a) == len(b) else nan
    out.append(("pipeline labels, bfloat16 vs float32, on the bench's texts", "= 1.000 (same labels)",
                f"{value:.3f} of {len(a)}" if a else "nan", _verdict(value, 1.0)))
    peak = _peaks(bf["rows"], "seam").get("encoder_service", nan) if bf else nan
    out.append(("bfloat16 encoder peak RSS under the benchmark's load", "≤ 700 MB", f"{peak:.0f} MB", _verdict(peak, 700, at_most=True)))
    return out


def issue19_section(results: dict) -> list[str]:
    lines = ["## bfloat16 by default, the peer and the hardware: the targets in one place", "",
             "| target | goal | measured | |", "|---|---|---|---|"]
    lines += [f"| {name} | {goal} | {measured} | {verdict} |" for name, goal, measured, verdict in issue19_targets(results)]
    return lines + [""]


def plot(results: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    precisions = list(results["precisions"])
    fig, axes = plt.subplots(2, 2 * len(precisions), figsize=(6 * len(precisions) * 2, 8), squeeze=False)
    for p_index, precision in enumerate(precisions):
        res = results["precisions"][precision]
        for s_index, per in enumerate((1, 16)):
            col = 2 * p_index + s_index
            peers = ("infinity",) if any(r["target"] == "infinity" for r in res["rows"]) else ()
            for target in ("naive", *(t + suffix for suffix in _seam_suffixes(res["rows"]) for t in ("encoder", "gateway")), *peers):
                rows = [r for r in res["rows"] if r["target"] == target and r["texts_per_request"] == per]
                xs = [r["concurrency"] for r in rows]
                axes[0][col].plot(xs, [r["throughput"] for r in rows], marker="o", label=target)
                axes[1][col].plot(xs, [r["p95_ms"] for r in rows], marker="o", label=target)
            axes[0][col].axhline(res["limit"]["throughput"], color="grey", linestyle="--", label="in-process limit")
            if res.get("hardware") and results.get("workload"):  # the GEMM's rate, in texts/s of this workload
                ceiling = res["hardware"]["gflops"] * 1e9 / results["workload"]["flops_per_text"]
                axes[0][col].axhline(ceiling, color="black", linestyle=":", label="GEMM rate (hardware limit)")
            axes[0][col].set_title(f"{precision}, {per} text(s)/request")
            axes[0][col].set_ylabel("texts/s")
            axes[1][col].set_ylabel("p95 latency (ms)")
            axes[1][col].set_yscale("log")
            for row in axes:
                row[col].set_xscale("log", base=2)
                row[col].set_xlabel("concurrent clients")
                row[col].legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=80)


