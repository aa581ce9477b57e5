"""`seam train`, `seam predict`, `seam check`, `seam encoders`, `seam evaluate`: a pipeline's life through
the gateway, each a thin call of :mod:`seam.client` printed for a terminal."""

from __future__ import annotations

import argparse
import concurrent.futures
import json
from pathlib import Path
from typing import Any

from seam.client import DEFAULT_TRAIN_TIMEOUT_S, SeamError
from seam.console import CLIError, gateway_client, problem_lines, read_csv, short, table
from seam.upload import CHUNK_ROWS, CSVProblem, ProgressBar, TrainingFile


def train_file(gateway: str, name: str, path: Path, *, text_column: str, label_column: str, estimator: str | None,
               feature: str, api_key: str | None = None, timeout_s: float = DEFAULT_TRAIN_TIMEOUT_S,
               chunk_rows: int = CHUNK_ROWS, encoder: str | None = None) -> dict:
    """Streams the CSV to the gateway in chunks of rows, drawing a progress bar on stderr meanwhile."""
    try:
        training = TrainingFile(path, text_column, label_column, chunk_rows=chunk_rows)
    except CSVProblem as exc:
        raise CLIError(str(exc)) from exc
    label = f"training {name} ({feature}, {estimator or 'default estimator'}) from {path.name}"

    def send() -> dict:
        with gateway_client(gateway, api_key, train_timeout=timeout_s) as client:
            return client.train_file(name, training, estimator=estimator, feature=feature, encoder=encoder).raw

    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as pool, ProgressBar(label, training.counter, training.size):
        sending = pool.submit(send)
        try:
            return sending.result()
        except CSVProblem as exc:
            raise CLIError(str(exc)) from exc
        except SeamError as exc:
            raise CLIError(problem_lines(exc, training=training)) from exc


def _accepted(acceptance: Any) -> str:
    if not isinstance(acceptance, dict):
        return "-"
    if acceptance.get("accepted") == "measured":
        return (f"measured: agreement {acceptance.get('agreement')} on {acceptance.get('sample_size')} texts, "
                f"largest change {acceptance.get('max_probability_change')}")
    return str(acceptance.get("accepted"))


def print_report(report: dict[str, Any]) -> None:
    """The chain, one link a row from the encoder-fed one, then every mismatch with both sides."""
    verdict = "compatible" if report.get("compatible") else "INCOMPATIBLE"
    print(f"pipeline {report.get('name')} v{report.get('version')} ({report.get('estimator')}): {verdict}")
    print(f"classes: {', '.join(report.get('classes') or [])}")
    print()
    links = []
    for i, link in enumerate(report.get("chain", []), 1):
        consumer = link.get("consumer") or {}
        links.append([str(i), str(link.get("producer") or "?"),
                      f"{consumer.get('model')} v{consumer.get('version')} ({consumer.get('estimator')})",
                      "yes" if link.get("compatible") else "NO", _accepted(link.get("acceptance"))])
    for row in table(["link", "producer", "consumer", "fits", "accepted"], links):
        print(f"  {row}")
    mismatches = report.get("mismatches", [])
    if mismatches:
        print()
        rows = [[str(m.get("field", "")), short(m.get("expected")), short(m.get("actual")), str(m.get("message", ""))]
                for m in mismatches]
        for row in table(["field", "expected", "actual", "why"], rows):
            print(f"  {row}")


def cmd_train(args: argparse.Namespace) -> int:
    result = train_file(
        args.gateway, args.name, Path(args.file), text_column=args.text_column, label_column=args.label_column,
        estimator=args.estimator, feature=args.feature, api_key=args.api_key, timeout_s=args.timeout,
        chunk_rows=args.chunk_rows, encoder=args.encoder,
    )
    print(json.dumps({k: result.get(k) for k in ("name", "version", "source", "classes", "metrics", "truncated_texts")},
                     indent=2))
    return 0


def cmd_predict(args: argparse.Namespace) -> int:
    try:
        with gateway_client(args.gateway, args.api_key) as client:
            result = client.predict(args.name, args.texts)
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc
    rows = []
    for text, p in zip(args.texts, result.predictions):
        best = max(p.probabilities.values())
        rows.append([p.label, f"{best:.3f}", text + ("  (truncated to the model window)" if p.truncated else "")])
    print(f"pipeline {result.name} v{result.version}")
    for row in table(["label", "p", "text"], rows):
        print(row)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    try:
        with gateway_client(args.gateway, args.api_key) as client:
            report = client.pipeline(args.name).raw
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc
    print_report(report)
    return 0 if report.get("compatible") else 3


def cmd_encoders(args: argparse.Namespace) -> int:
    """One row per registered encoder and output; exit 1 when one is not ready."""
    try:
        with gateway_client(args.gateway, args.api_key) as client:
            encoders = client.encoders()
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc
    rows = []
    for e in encoders:
        ready = "yes" if e["ready"] else "NO"
        outputs = e.get("outputs") or {}
        if not outputs:
            rows.append([e["name"], e["url"], ready, str(e.get("model") or "?"), "-", "", "", ""])
        for output, o in outputs.items():
            rows.append([e["name"], e["url"], ready, str(e.get("model") or "?"), output, str(o["dim"]), o["dtype"],
                         o["id"][:12]])
    for row in table(["encoder", "url", "ready", "model", "output", "dim", "dtype", "contract"], rows):
        print(row)
    for e in encoders:
        if not e["ready"]:
            print(f"{e['name']} is not ready: {e.get('error')}")
    return 0 if all(e["ready"] for e in encoders) else 1


def cmd_evaluate(args: argparse.Namespace) -> int:
    from seam.evaluate import EvaluateError, plot, table_lines, targets_of

    column = args.target_column or args.label_column
    texts, truth = read_csv(Path(args.file), args.text_column, column)
    try:
        truth_of = {"targets": targets_of(truth, column)} if args.target_column else {"labels": truth}
        with gateway_client(args.gateway, args.api_key) as client:
            result = client.evaluate(args.name, texts, version=args.version, **truth_of)
        for line in table_lines(result):
            print(line)
        if args.plot:
            plot(result, Path(args.plot))
            print(f"wrote {args.plot}")
    except EvaluateError as exc:
        raise CLIError(str(exc)) from exc
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc
    return 0


def add_commands(add: Any) -> None:
    """Registers the commands on the CLI's parser (``add(name, help=...)`` gives a sub-parser)."""
    p = add("train", help="train a pipeline from a CSV file (streamed in chunks, with a progress bar)")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--estimator", default=None)
    p.add_argument("--feature", default="embedding", help="embedding | tokens | probabilities | pipeline:<name>")
    p.add_argument("--encoder", default=None, help="the registered encoder to fit through (`seam encoders`); "
                   "default: the gateway's first")
    p.add_argument("--timeout", type=float, default=DEFAULT_TRAIN_TIMEOUT_S, help="seconds to wait for the fit")
    p.add_argument("--chunk-rows", type=int, default=CHUNK_ROWS, help="rows read and sent per chunk")
    p.set_defaults(func=cmd_train)
    p = add("predict", help="predict labels for texts")
    p.add_argument("name")
    p.add_argument("texts", nargs="+")
    p.set_defaults(func=cmd_predict)
    p = add("encoders", help="list the gateway's encoders: readiness, model, outputs and contract ids")
    p.set_defaults(func=cmd_encoders)
    p = add("evaluate", help="score a pipeline on a labelled CSV file (accuracy, F1, confusion matrix, ECE; or R², MAE, RMSE)")
    p.add_argument("name")
    p.add_argument("file")
    p.add_argument("--version", type=int, default=None, help="a fixed version (default: the latest)")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label")
    p.add_argument("--target-column", default=None, help="a numeric column: evaluate a regressor against it")
    p.add_argument("--plot", default=None, help="write a PNG with the confusion matrix and the reliability diagram (needs the bench extra)")
    p.set_defaults(func=cmd_evaluate)
    p = add("check", help="print a pipeline's compatibility report as a table")
    p.add_argument("name")
    p.set_defaults(func=cmd_check)
