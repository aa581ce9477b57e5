"""The `seam` command: run the stack, train and query pipelines, read compatibility reports.

    seam up                                   start all three services and a demo pipeline
    seam train NAME FILE.csv [--estimator E] [--feature F] [--text-column T] [--label-column L]
    seam predict NAME "text" ["text" ...]
    seam check NAME

Errors print the service's problem+json detail, not a traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

import httpx

DEFAULT_GATEWAY = os.environ.get("SEAM_GATEWAY", "http://127.0.0.1:8000")
DEMO_PIPELINE = "support-intents"
MISMATCH_DEMO = "legacy-bert-base"


class CLIError(Exception):
    pass


def sample_data() -> Path:
    return Path(str(resources.files("seam") / "data" / "support_intents.csv"))


def read_csv(path: Path, text_column: str, label_column: str, *, chunk: int = 500, progress: bool = True) -> tuple[list[str], list[str]]:
    """Read the file in chunks of rows, with a progress line on stderr for big files."""
    texts: list[str] = []
    labels: list[str] = []
    size = max(path.stat().st_size, 1)
    with path.open(newline="", encoding="utf-8") as fh:
        reader = csv.DictReader(fh)
        missing = {text_column, label_column} - set(reader.fieldnames or ())
        if missing:
            raise CLIError(f"{path} has no column(s) {sorted(missing)}; it has {reader.fieldnames}")
        for row in reader:
            texts.append(row[text_column])
            labels.append(row[label_column])
            if progress and len(texts) % chunk == 0:
                _progress("reading", fh.tell() / size)
    if progress:
        _progress("reading", 1.0, done=True)
    return texts, labels


def _progress(what: str, fraction: float, *, done: bool = False) -> None:
    width = 30
    filled = int(width * min(fraction, 1.0))
    sys.stderr.write(f"\r{what} [{'#' * filled}{'.' * (width - filled)}] {fraction:6.1%}" + ("\n" if done else ""))
    sys.stderr.flush()


def _call(method: str, url: str, **kwargs: Any) -> Any:
    try:
        r = httpx.request(method, url, timeout=kwargs.pop("timeout", 300), **kwargs)
    except httpx.TransportError as exc:
        raise CLIError(f"cannot reach {url}: {exc}. Is the stack running (`make run`)?") from exc
    if r.status_code >= 400:
        try:
            problem = r.json()
        except ValueError:
            raise CLIError(f"{r.status_code} from {url}: {r.text[:500]}") from None
        lines = [f"{problem.get('status', r.status_code)} {problem.get('title', '')}: {problem.get('detail', '')}"]
        lines += [format_mismatch(m) for m in problem.get("mismatches", [])]
        raise CLIError("\n".join(lines))
    return r.json() if r.content else None


def format_mismatch(m: dict[str, Any]) -> str:
    return (f"  - {m.get('field')}: expected {_short(m.get('expected'))}, got {_short(m.get('actual'))}"
            f" ({m.get('message')}; producer: {m.get('producer')}; consumer: {m.get('consumer')})")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def train(gateway: str, name: str, texts: list[str], labels: list[str], estimator: str | None, feature: str) -> dict:
    body: dict[str, Any] = {"texts": texts, "labels": labels, "feature": feature}
    if estimator:
        body["estimator"] = estimator
    sys.stderr.write(f"training {name} on {len(texts)} texts ({feature}, {estimator or 'default estimator'})...\n")
    return _call("POST", f"{gateway}/v1/pipelines/{name}/train", json=body)


def print_report(report: dict[str, Any]) -> None:
    print(f"pipeline {report.get('name')}: {'compatible' if report.get('compatible') else 'INCOMPATIBLE'}")
    for link in report.get("chain", []):
        print(f"  link: {json.dumps(link)}")
    mismatches = report.get("mismatches", [])
    if mismatches:
        print(f"  {'field':<22} {'expected':<30} {'actual':<30}")
        for m in mismatches:
            print(f"  {m.get('field', ''):<22} {_short(m.get('expected')):<30} {_short(m.get('actual')):<30}")
            print(f"      {m.get('message')}; producer: {m.get('producer')}; consumer: {m.get('consumer')}")


# -- seam up ----------------------------------------------------------------------------------

def seed_demo(gateway: str, classifier: str) -> None:
    """The demo pipeline, trained once from the sample data, and a model that cannot fit MiniLM."""
    existing = httpx.get(f"{gateway}/v1/pipelines/{DEMO_PIPELINE}", timeout=30)
    if existing.status_code == 404:
        texts, labels = read_csv(sample_data(), "text", "label", progress=False)
        result = train(gateway, DEMO_PIPELINE, texts, labels, "logistic_regression", "embedding")
        print(f"trained {DEMO_PIPELINE} v{result['version']}: {json.dumps(result.get('metrics'))}")
    if httpx.get(f"{classifier}/v1/models/{MISMATCH_DEMO}", timeout=30).status_code == 404:
        # A classifier fitted on another encoder (768-wide bert-base vectors): serving it with MiniLM must be refused.
        import random

        rng = random.Random(0)
        contract = {"kind": "embedding", "dim": 768, "dtype": "float32",
                    "space": {"model_id": "bert-base-uncased", "weights_sha256": "0" * 64, "pooling": "cls",
                              "normalized": False, "max_tokens": 512, "fingerprint": []}}
        features = [[rng.gauss(0, 1) for _ in range(768)] for _ in range(8)]
        _call("POST", f"{classifier}/v1/models/{MISMATCH_DEMO}/fit", json={
            "features": features, "labels": ["billing", "shipping"] * 4, "contract": contract,
            "estimator": "logistic_regression", "source": {"type": "encoder", "output": "embedding"}})


def up(args: argparse.Namespace) -> int:
    from seam.stack import Stack

    stack = Stack(var=Path(args.var))
    print("starting encoder (:8001), classifier (:8002) and gateway (:8000); logs in", Path(args.var) / "log")
    try:
        stack.start()
        gateway, classifier = stack.url("gateway"), stack.url("classifier_service")
        seed_demo(gateway, classifier)
        print(f"""
seam is up. Try:

  curl -s {gateway}/v1/pipelines/{DEMO_PIPELINE}/predict -H 'content-type: application/json' \\
       -d '{{"texts": ["I was charged twice this month", "my parcel never arrived"]}}'

  curl -s {gateway}/v1/pipelines/{MISMATCH_DEMO}/predict -H 'content-type: application/json' \\
       -d '{{"texts": ["hello"]}}'          # refused: fitted on 768-wide bert-base, served MiniLM

  curl -s {gateway}/v1/pipelines/{DEMO_PIPELINE}     # the chain and its compatibility report
  curl -s {stack.url('encoder_service')}/v1/encode -H 'content-type: application/json' -d '{{"texts": ["hello world"]}}'

Ctrl-C stops all three.""", flush=True)
        while (child := stack.failed()) is None:
            time.sleep(0.5)
        print(f"{child.module} exited with code {child.proc.returncode}:\n{child.log_tail()}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("\nstopping...")
        return 0
    except (RuntimeError, CLIError) as exc:
        print(f"seam up failed: {exc}", file=sys.stderr)
        return 1
    finally:
        stack.stop()


# -- the rest ---------------------------------------------------------------------------------

def cmd_train(args: argparse.Namespace) -> int:
    texts, labels = read_csv(Path(args.file), args.text_column, args.label_column)
    result = train(args.gateway, args.name, texts, labels, args.estimator, args.feature)
    print(json.dumps({k: result.get(k) for k in ("name", "version", "classes", "metrics")}, indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    result = _call("POST", f"{args.gateway}/v1/pipelines/{args.name}/predict", json={"texts": args.texts})
    for text, p in zip(args.texts, result["predictions"]):
        best = max(p["probabilities"].values())
        print(f"{p['label']:<16} {best:6.3f}  {text}")
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    report = _call("GET", f"{args.gateway}/v1/pipelines/{args.name}")
    print_report(report)
    return 0 if report.get("compatible") else 3


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="seam", description="Serve a pre-trained encoder and the models fed by it.")
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway URL (env SEAM_GATEWAY)")
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("up", help="start encoder, classifier and gateway on 127.0.0.1 with a demo pipeline")
    p.add_argument("--var", default="var", help="folder for the model store and logs")
    p.set_defaults(func=up)
    p = sub.add_parser("train", help="train a pipeline from a CSV file")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--estimator", default=None)
    p.add_argument("--feature", default="embedding", help="embedding | tokens | probabilities | pipeline:<name>")
    p.set_defaults(func=cmd_train)
    p = sub.add_parser("predict", help="predict labels for texts")
    p.add_argument("name")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_predict)
    p = sub.add_parser("check", help="print a pipeline's compatibility report")
    p.add_argument("name")
    p.set_defaults(func=cmd_check)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
