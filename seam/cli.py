"""The `seam` command: run the stack, train and query pipelines, read compatibility reports.

    seam up                                   start all three services and a demo pipeline
    seam train NAME FILE.csv [--estimator E] [--feature F] [--text-column T] [--label-column L]
    seam predict NAME "text" ["text" ...]
    seam check NAME
    seam encoders                             the gateway's encoders: readiness, model, outputs
    seam refit NAME --encoder E [--promote]   refit a pipeline's chain from its kept texts on encoder E
    seam migrate --from E --to F [--promote]  refit every pipeline served by E onto F; one comparison table
    seam compare NAME A B FILE.csv            two versions or aliases on a file's texts (and labels)
    seam promote NAME VERSION [--alias A]     point production (or A) at a version; roll back the same way
    seam aliases NAME                         a pipeline's aliases

``--gateway`` (env SEAM_GATEWAY) picks the gateway, ``--api-key`` (env SEAM_API_KEY) is sent as a bearer
token. Errors print the service's problem+json detail, not a traceback; the exit code is 2 (3 when
``seam check`` finds the pipeline incompatible).
"""

from __future__ import annotations

import argparse
import concurrent.futures
import json
import os
import signal
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from seam.client import Gateway, NotFound, SeamError, Unreachable
from seam.client import DEFAULT_TRAIN_TIMEOUT_S
from seam.upload import CHUNK_ROWS, CSVProblem, ProgressBar, TrainingFile

DEFAULT_GATEWAY = os.environ.get("SEAM_GATEWAY", "http://127.0.0.1:8000")
DEMO_PIPELINE = "support-intents"
MISMATCH_DEMO = "legacy-bert-base"


class CLIError(Exception):
    pass


def sample_data() -> Path:
    return Path(str(resources.files("seam") / "data" / "support_intents.csv"))


def read_csv(path: Path, text_column: str, label_column: str) -> tuple[list[str], list[str]]:
    """All rows at once (the small sample data); ``seam train`` streams instead."""
    try:
        rows = list(TrainingFile(path, text_column, label_column).rows())
    except CSVProblem as exc:
        raise CLIError(str(exc)) from exc
    return [text for text, _ in rows], [label for _, label in rows]


def gateway_client(gateway: str, api_key: str | None = None, **options: Any) -> Gateway:
    """Every HTTP call the CLI makes goes through :mod:`seam.client`: one HTTP path, not two."""
    return Gateway(gateway, api_key=api_key, **options)


def problem_lines(error: SeamError, *, training: TrainingFile | None = None) -> str:
    """The problem's status, title and detail, the CSV line of a refused row, then every mismatch."""
    if isinstance(error, Unreachable):
        return f"{error.detail}. Is the stack running (`make run`)?"
    lines = [str(error)]
    index = error.problem.get("index")
    if training is not None and isinstance(index, int) and training.line_of(index) is not None:
        lines.append(f"  (row {index} is line {training.line_of(index)} of {training.path})")
    lines += [format_mismatch(m) for m in error.problem.get("mismatches", []) if isinstance(m, dict)]
    return "\n".join(lines)


def format_mismatch(m: dict[str, Any]) -> str:
    return (f"  - {m.get('field')}: expected {_short(m.get('expected'))}, got {_short(m.get('actual'))}"
            f" ({m.get('message')}; producer: {m.get('producer')}; consumer: {m.get('consumer')})")


def _short(value: Any) -> str:
    text = json.dumps(value)
    return text if len(text) <= 60 else text[:57] + "..."


def train(gateway: str, name: str, texts: list[str], labels: list[str], estimator: str | None, feature: str,
          api_key: str | None = None) -> dict:
    sys.stderr.write(f"training {name} on {len(texts)} texts ({feature}, {estimator or 'default estimator'})...\n")
    try:
        with gateway_client(gateway, api_key) as client:
            return client.train(name, texts, labels, estimator=estimator, feature=feature).raw
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc


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


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    widths = [max(len(str(cell)) for cell in column) for column in zip(header, *rows)]
    line = lambda cells: "  ".join(str(c).ljust(w) for c, w in zip(cells, widths)).rstrip()  # noqa: E731
    return [line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)]


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
    for row in _table(["link", "producer", "consumer", "fits", "accepted"], links):
        print(f"  {row}")
    mismatches = report.get("mismatches", [])
    if mismatches:
        print()
        rows = [[str(m.get("field", "")), _short(m.get("expected")), _short(m.get("actual")), str(m.get("message", ""))]
                for m in mismatches]
        for row in _table(["field", "expected", "actual", "why"], rows):
            print(f"  {row}")


# -- seam up ----------------------------------------------------------------------------------

def seed_demo(gateway: str, classifier: str, api_key: str | None = None) -> None:
    """The demo pipeline, trained once from the sample data, and a model that cannot fit MiniLM."""
    try:
        with gateway_client(gateway, api_key, timeout=30) as client:
            client.pipeline(DEMO_PIPELINE)
    except NotFound:
        texts, labels = read_csv(sample_data(), "text", "label")
        result = train(gateway, DEMO_PIPELINE, texts, labels, "logistic_regression", "embedding", api_key=api_key)
        print(f"trained {DEMO_PIPELINE} v{result['version']}: {json.dumps(result.get('metrics'))}")
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc
    # The classifier is internal: the demo model goes to it directly, with its token when one is set
    # (through the same client: its calls and errors are the gateway's).
    internal = {"X-Seam-Internal-Token": os.environ["CLASSIFIER_INTERNAL_TOKEN"]} if os.environ.get("CLASSIFIER_INTERNAL_TOKEN") else {}
    with gateway_client(classifier, headers=internal, timeout=60) as direct:
        try:
            direct.request("GET", f"/v1/models/{MISMATCH_DEMO}")
            return
        except NotFound:
            pass
        except SeamError as exc:
            raise CLIError(problem_lines(exc)) from exc
        # A classifier fitted on another encoder (768-wide bert-base vectors): serving it with MiniLM must be refused.
        import random

        rng = random.Random(0)
        contract = {"kind": "embedding", "dim": 768, "dtype": "float32",
                    "space": {"model_id": "bert-base-uncased", "weights_sha256": "0" * 64, "pooling": "cls",
                              "normalized": False, "max_tokens": 512, "fingerprint": []}}
        features = [[rng.gauss(0, 1) for _ in range(768)] for _ in range(8)]
        try:
            direct.request("POST", f"/v1/models/{MISMATCH_DEMO}/fit", json={
                "features": features, "labels": ["billing", "shipping"] * 4, "contract": contract,
                "estimator": "logistic_regression", "source": {"type": "encoder", "output": "embedding"}})
        except SeamError as exc:
            raise CLIError(problem_lines(exc)) from exc


def _interrupt(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def up(args: argparse.Namespace) -> int:
    from seam.stack import SERVICES, Stack

    stack = Stack(var=Path(args.var))
    ports = {prefix: os.environ.get(f"{prefix}PORT", str(port)) for _, prefix, port in SERVICES}
    print(f"starting encoder (:{ports['ENCODER_']}), classifier (:{ports['CLASSIFIER_']}) and gateway "
          f"(:{ports['GATEWAY_']}); logs in {Path(args.var) / 'log'}", flush=True)
    # `kill`, `docker stop` or a supervisor stop it like Ctrl-C does: the services go down with it.
    signal.signal(signal.SIGTERM, _interrupt)
    try:
        stack.start()
        gateway, classifier = stack.url("gateway"), stack.url("classifier_service")
        seed_demo(gateway, classifier, args.api_key)
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
    for row in _table(["label", "p", "text"], rows):
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
    for row in _table(["encoder", "url", "ready", "model", "output", "dim", "dtype", "contract"], rows):
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


def build_parser() -> argparse.ArgumentParser:
    # --gateway and --api-key work before or after the command (`seam --gateway URL check x`, `seam check x --gateway URL`).
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--gateway", default=argparse.SUPPRESS, help="gateway URL (env SEAM_GATEWAY)")
    common.add_argument("--api-key", default=argparse.SUPPRESS, help="the gateway's API key (env SEAM_API_KEY)")
    parser = argparse.ArgumentParser(prog="seam", description="Serve a pre-trained encoder and the models fed by it.")
    parser.add_argument("--gateway", default=DEFAULT_GATEWAY, help="gateway URL (env SEAM_GATEWAY)")
    parser.add_argument("--api-key", default=os.environ.get("SEAM_API_KEY"), help="the gateway's API key (env SEAM_API_KEY)")
    sub = parser.add_subparsers(dest="command", required=True)
    add = lambda name, **kw: sub.add_parser(name, parents=[common], **kw)  # noqa: E731
    p = add("up", help="start encoder, classifier and gateway on 127.0.0.1 with a demo pipeline")
    p.add_argument("--var", default="var", help="folder for the model store and logs")
    p.set_defaults(func=up)
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
    from seam.upgrade import add_commands  # refit, migrate, compare, promote, aliases

    add_commands(add)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    args.gateway = args.gateway.rstrip("/")
    try:
        return args.func(args)
    except CLIError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
