"""The request examples an app's /docs shows, as requests: what a user gets by pasting them."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import httpx


@dataclass(frozen=True)
class Example:
    method: str
    path: str  # path parameters filled with their examples
    body: Any  # None for a GET

    def __str__(self) -> str:
        return f"{self.method} {self.path}"


def _resolve(spec: dict, node: dict) -> dict:
    while "$ref" in node:
        node = spec["components"]["schemas"][node["$ref"].rsplit("/", 1)[-1]]
    return node


def _param_value(param: dict) -> Any:
    examples = param.get("examples") or {}
    if examples:
        return next(iter(examples.values()))["value"]
    if "example" in param:
        return param["example"]
    return None


def examples(spec: dict) -> list[Example]:
    """Every JSON request body example (media-type ``examples`` and schema ``examples``) of every
    operation, and every GET whose path parameters all have examples."""
    found: list[Example] = []
    for template, operations in spec["paths"].items():
        for method, op in operations.items():
            path, complete = template, True
            for param in op.get("parameters", []):
                if param["in"] != "path":
                    continue
                value = _param_value(param)
                if value is None:
                    complete = False
                    continue
                path = path.replace("{" + param["name"] + "}", str(value))
            body = (op.get("requestBody") or {}).get("content", {}).get("application/json")
            if body is not None:
                bodies = [e["value"] for e in (body.get("examples") or {}).values()]
                bodies += _resolve(spec, body.get("schema", {})).get("examples", [])
                assert bodies, f"{method.upper()} {template} documents a JSON body without an example"
                assert complete, f"{method.upper()} {template}: a path parameter has no example"
                found += [Example(method.upper(), path, b) for b in bodies]
            elif method == "get" and complete and "{" in template:
                found.append(Example("GET", path, None))
    return found


async def send(client: httpx.AsyncClient, example: Example) -> httpx.Response:
    return await client.request(example.method, example.path, json=example.body)


def in_order(found: list[Example], *first: str) -> list[Example]:
    """Requests whose path ends with one of ``first`` (``fit``, ``train``) go first, then the other
    POSTs, then the GETs: the order a reader of the docs follows."""
    def rank(e: Example) -> tuple[int, int]:
        creates = next((i for i, suffix in enumerate(first) if e.path.endswith(suffix)), len(first))
        return (0 if e.method == "POST" else 1, creates)
    return sorted(found, key=rank)
