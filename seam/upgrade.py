"""`seam refit`, `seam migrate`, `seam compare`, `seam promote`, `seam aliases`: thin calls to the gateway
(every call through :mod:`seam.client`, as the rest of the CLI's).

A chain is refitted one pipeline at a time from the bottom (each call names the versions below it that are
already refitted, so a shared base is fitted once), which lets the CLI draw a bar over the pipelines.
With ``--promote``, production moves once every refit asked for has succeeded, each version checked by the
gateway before its alias moves.
"""

from __future__ import annotations

import argparse
import csv
import sys
import time
from pathlib import Path
from collections.abc import Callable
from typing import Any, TextIO, TypeVar

from seam.console import CLIError, gateway_client, problem_lines, table
from seam.client import Gateway, SeamError

T = TypeVar("T")

REFIT_TIMEOUT_S = 3600.0


class Bar:
    """One stderr line over a known number of steps: ``[#####.....] 2/5 refitting intents v1``."""

    def __init__(self, total: int, stream: TextIO | None = None) -> None:
        self.total, self.done, self.stream = total, 0, stream or sys.stderr
        self.started = time.monotonic()

    def show(self, what: str) -> None:
        width = 30
        filled = int(width * self.done / self.total) if self.total else width
        end = "\r" if self.stream.isatty() else "\n"
        self.stream.write(f"[{'#' * filled}{'.' * (width - filled)}] {self.done}/{self.total} "
                          f"{time.monotonic() - self.started:5.0f}s {what}{end}")
        self.stream.flush()

    def step(self, what: str) -> None:
        self.done += 1
        self.show(what)


def _steps(report: dict[str, Any]) -> list[tuple[str, int]]:
    """The (pipeline, version) of each link of a served chain, bottom-up."""
    return [(link["consumer"]["model"], link["consumer"]["version"]) for link in report.get("chain", [])]


def refit_chains(gateway: str, reports: list[dict[str, Any]], encoder: str, *, promote: bool,
                 api_key: str | None) -> tuple[list[dict[str, Any]], list[str]]:
    """Refits every step of ``reports``' chains once, bottom-up; returns the comparisons and the failures."""
    steps: list[tuple[str, int]] = []
    for report in sorted(reports, key=lambda r: len(r.get("chain", []))):
        steps += [s for s in _steps(report) if s not in steps]
    done: dict[tuple[str, int], int] = {}
    failed: dict[tuple[str, int], str] = {}
    rows: list[dict[str, Any]] = []
    bar = Bar(len(steps))
    bar.show("starting")
    for i, (name, version) in enumerate(steps):
        below = next((r for r in reports if (name, version) in _steps(r)), None)
        chain = _steps(below) if below else [(name, version)]
        lower = chain[: chain.index((name, version))]
        if any(step in failed for step in lower):
            failed[(name, version)] = f"its base {', '.join(f'{n} v{v}' for n, v in lower if (n, v) in failed)} failed"
            bar.step(f"skipped {name} v{version}")
            continue
        reuse = [{"pipeline": n, "version": v, "refitted": done[(n, v)]} for n, v in lower if (n, v) in done]
        try:
            answer = _ask(gateway, api_key, lambda c: c.refit(name, encoder, version=version, reuse=reuse))
        except CLIError as exc:
            failed[(name, version)] = str(exc)
            bar.step(f"FAILED {name} v{version}")
            continue
        for result in answer["pipelines"]:
            done[(result["pipeline"], result["old_version"])] = result["new_version"]
            rows.append(result)
        bar.step(f"refitted {name} v{version} -> v{done.get((name, version), '?')}")
    if promote and not failed:
        for result in rows:
            moved = _ask(gateway, api_key, lambda c: c.set_alias(result["pipeline"], "production", result["new_version"]))
            result["production"] = moved["version"]
    return rows, [f"{n} v{v}: {why}" for (n, v), why in failed.items()]


def _ask(gateway: str, api_key: str | None, call: Callable[[Gateway], T]) -> T:
    """One call through the client; a problem answer becomes the CLI's error, every mismatch listed."""
    try:
        with gateway_client(gateway, api_key, train_timeout=REFIT_TIMEOUT_S) as client:
            return call(client)
    except SeamError as exc:
        raise CLIError(problem_lines(exc)) from exc


def _fmt(value: Any) -> str:
    return "-" if value is None else f"{value:.3f}" if isinstance(value, float) else str(value)


def print_comparison(rows: list[dict[str, Any]], failures: list[str], promote: bool) -> None:
    cells = [[r["pipeline"], f"v{r['old_version']} ({r.get('old_encoder') or '?'})",
              f"v{r['new_version']} ({r.get('new_encoder')})", _fmt(r.get("old_cv_accuracy")),
              _fmt(r.get("new_cv_accuracy")), _fmt(r.get("agreement")), f"v{r['production']}" if "production" in r else "-"]
             for r in rows]
    for line in table(["pipeline", "old", "new", "old acc", "new acc", "agreement", "production"], cells):
        print(line)
    for r in rows:
        if r.get("agreement_unavailable"):
            print(f"{r['pipeline']}: no agreement measured: {r['agreement_unavailable']}")
    for failure in failures:
        print(f"FAILED {failure}", file=sys.stderr)
    if promote and failures:
        print("nothing promoted: a refit failed", file=sys.stderr)
    elif not promote and rows:
        print("production still serves the old versions; promote with `seam promote NAME VERSION`")


def cmd_refit(args: argparse.Namespace) -> int:
    report = _ask(args.gateway, args.api_key, lambda c: c.pipeline(args.name).raw)
    rows, failures = refit_chains(args.gateway, [report], args.encoder, promote=args.promote, api_key=args.api_key)
    print_comparison(rows, failures, args.promote)
    return 1 if failures else 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """Every pipeline whose served chain starts at encoder ``--from``, refitted onto ``--to``."""
    reports = [p.raw for p in _ask(args.gateway, args.api_key, lambda c: c.pipelines())]
    chosen = [r for r in reports if r.get("chain") and r["chain"][0].get("encoder") == args.source]
    if not chosen:
        print(f"no pipeline is served by encoder {args.source!r}")
        return 0
    rows, failures = refit_chains(args.gateway, chosen, args.target, promote=args.promote, api_key=args.api_key)
    print_comparison(rows, failures, args.promote)
    return 1 if failures else 0


def _version_or_alias(value: str) -> int | str:
    return int(value) if value.isdigit() else value


def cmd_compare(args: argparse.Namespace) -> int:
    try:
        with Path(args.file).open(newline="", encoding="utf-8") as f:
            rows = list(csv.DictReader(f))
    except (OSError, UnicodeDecodeError, csv.Error) as exc:
        raise CLIError(f"cannot read {args.file}: {exc}") from exc
    if not rows or args.text_column not in rows[0]:
        raise CLIError(f"{args.file} has no {args.text_column!r} column (--text-column)")
    body: dict[str, Any] = {"texts": [r[args.text_column] for r in rows], "a": _version_or_alias(args.a),
                            "b": _version_or_alias(args.b)}
    if args.label_column in rows[0]:
        body["labels"] = [r[args.label_column] for r in rows]
    answer = _ask(args.gateway, args.api_key,
                  lambda c: c.compare(args.name, body["texts"], body["a"], body["b"], labels=body.get("labels")))
    cells = [[side, str(answer[side]["asked"]), f"v{answer[side]['version']}", str(answer[side]["encoder"]),
              _fmt(answer[side].get("accuracy")), _fmt(answer[side].get("macro_f1"))] for side in ("a", "b")]
    for line in table(["", "asked", "version", "encoder", "accuracy", "macro-F1"], cells):
        print(line)
    differ = [i for i, p in enumerate(answer["predictions"]) if not p["agree"]]
    print(f"agreement {answer['agreement']:.3f} over {answer['texts']} texts; {len(differ)} differ")
    for i in differ[:20]:
        p = answer["predictions"][i]
        print(f"  line {i + 2}: a {p['a']['label']} ({p['a']['probability']:.2f}), b {p['b']['label']} "
              f"({p['b']['probability']:.2f}){', true ' + p['label'] if 'label' in p else ''}")
    return 0


def cmd_promote(args: argparse.Namespace) -> int:
    answer = _ask(args.gateway, args.api_key, lambda c: c.set_alias(args.name, args.alias, args.version))
    print(f"{args.name}: {args.alias} -> v{answer['version']} (served by encoder {answer.get('encoder')})")
    return 0


def cmd_aliases(args: argparse.Namespace) -> int:
    aliases = _ask(args.gateway, args.api_key, lambda c: c.aliases(args.name))
    if not aliases:
        print(f"{args.name} has no aliases: a plain predict serves its latest version")
    for line in table(["alias", "version"], [[a, f"v{v}"] for a, v in sorted(aliases.items())]) if aliases else []:
        print(line)
    return 0


def add_commands(add: Any) -> None:
    """Registers the commands on the CLI's parser (``add(name, help=...)`` gives a sub-parser)."""
    p = add("refit", help="refit a pipeline (and the chain below it) from its kept texts on another encoder")
    p.add_argument("name")
    p.add_argument("--encoder", required=True, help="the registered encoder to refit through (`seam encoders`)")
    p.add_argument("--promote", action="store_true", help="move production to the new versions when all succeed")
    p.set_defaults(func=cmd_refit)
    p = add("migrate", help="refit every pipeline served by one encoder onto another, and compare")
    p.add_argument("--from", dest="source", required=True, help="the encoder the pipelines are served by now")
    p.add_argument("--to", dest="target", required=True, help="the encoder to refit them through")
    p.add_argument("--promote", action="store_true", help="move production to the new versions when all succeed")
    p.set_defaults(func=cmd_migrate)
    p = add("compare", help="two versions or aliases of a pipeline on the texts (and labels) of a CSV file")
    p.add_argument("name")
    p.add_argument("a", help="a version number or an alias")
    p.add_argument("b", help="a version number or an alias")
    p.add_argument("file")
    p.add_argument("--text-column", default="text")
    p.add_argument("--label-column", default="label", help="used when the file has it: accuracy and macro-F1")
    p.set_defaults(func=cmd_compare)
    p = add("promote", help="point an alias (production by default) at a version; roll back the same way")
    p.add_argument("name")
    p.add_argument("version", type=int)
    p.add_argument("--alias", default="production")
    p.set_defaults(func=cmd_promote)
    p = add("aliases", help="list a pipeline's aliases")
    p.add_argument("name")
    p.set_defaults(func=cmd_aliases)
