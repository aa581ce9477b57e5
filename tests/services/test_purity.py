"""The pure core stays pure: importing every module of ``services`` (the HTTP kit ``services.http``
aside) loads no web framework, no HTTP client, no server and no torch."""

from __future__ import annotations

import json
import pkgutil
import subprocess
import sys

import services
from tests.processes import ROOT

FORBIDDEN = ("fastapi", "starlette", "uvicorn", "aiohttp", "httpx", "torch")


def core_modules() -> list[str]:
    return sorted(f"services.{m.name}" for m in pkgutil.iter_modules(services.__path__) if m.name != "http")


def test_the_core_lists_its_modules():
    assert {"services.codecs", "services.contracts", "services.errors", "services.oip"} <= set(core_modules())


def test_importing_the_core_loads_no_framework_client_server_or_torch():
    code = (
        "import importlib, json, sys\n"
        f"for name in {core_modules()!r}: importlib.import_module(name)\n"
        f"print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & set({FORBIDDEN!r}))))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.strip().splitlines()[-1]) == []
