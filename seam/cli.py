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
import os
import sys

from seam import demo, pipelines, upgrade
from seam.console import CLIError

DEFAULT_GATEWAY = os.environ.get("SEAM_GATEWAY", "http://127.0.0.1:8000")


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
    for commands in (demo, pipelines, upgrade):  # up; train, predict, ...; refit, migrate, compare, ...
        commands.add_commands(add)
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
