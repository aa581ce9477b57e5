"""`seam up`: the three services on 127.0.0.1 (:mod:`seam.stack`), a demo pipeline trained from the sample
data, and a model that cannot fit MiniLM (its predictions are refused: the seam check at work)."""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time
from pathlib import Path
from typing import Any

from seam.client import NotFound, SeamError
from seam.console import CLIError, gateway_client, problem_lines, read_csv, sample_data
from services.wire import INTERNAL_TOKEN_HEADER

DEMO_PIPELINE = "support-intents"
MISMATCH_DEMO = "legacy-bert-base"


def train(gateway: str, name: str, texts: list[str], labels: list[str], estimator: str | None, feature: str,
          api_key: str | None = None) -> dict:
    sys.stderr.write(f"training {name} on {len(texts)} texts ({feature}, {estimator or 'default estimator'})...\n")
    try:
        with gateway_client(gateway, api_key) as client:
            return client.train(name, texts, labels, estimator=estimator, feature=feature).raw
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc


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
    internal = {INTERNAL_TOKEN_HEADER: os.environ["CLASSIFIER_INTERNAL_TOKEN"]} if os.environ.get("CLASSIFIER_INTERNAL_TOKEN") else {}
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


def add_commands(add: Any) -> None:
    """Registers ``seam up`` on the CLI's parser."""
    p = add("up", help="start encoder, classifier and gateway on 127.0.0.1 with a demo pipeline")
    p.add_argument("--var", default="var", help="folder for the model store and logs")
    p.set_defaults(func=up)
