"""Start the three services as child processes, the way `make run` and `seam up` do."""

from __future__ import annotations

import itertools
import os
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import httpx

# The command each service runs, here and in docker-compose.yml: `python -m <module>`.
SERVICES = (
    ("encoder_service", "ENCODER_", 8001),
    ("classifier_service", "CLASSIFIER_", 8002),
    ("gateway", "GATEWAY_", 8000),
)


# Where free_port looks: None, any port the kernel offers; or a block of ports of this process's own
# (the test suite's workers each take one, below the kernel's ephemeral range, so that no two of them,
# and no outgoing connection, ever pick the same port).
PORTS: range | None = None
_HANDED_OUT: set[int] = set()


def free_port() -> int:
    """A port on 127.0.0.1 that nothing listens on right now, and that this process has not handed out
    before: a port is handed out before the server that will bind it has started, and the kernel may
    offer a just-released port again."""
    candidates = iter(PORTS) if PORTS is not None else itertools.repeat(0)  # 0: the kernel's choice
    for candidate in candidates:
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", candidate))
            except OSError:  # taken
                continue
            port = s.getsockname()[1]
        if port not in _HANDED_OUT:
            _HANDED_OUT.add(port)
            return port
    raise RuntimeError(f"every port of {PORTS} is taken or handed out already")


def service_command(module: str) -> list[str]:
    return [sys.executable, "-m", module]


def wait_ready(url: str, proc: subprocess.Popen, *, timeout: float, name: str, log_tail=lambda: "(no log)") -> None:
    """Poll ``url``/readyz until 200; fail early, with the log's tail, if the process exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"{name} exited with code {proc.returncode}:\n{log_tail()}")
        try:
            if httpx.get(url + "/readyz", timeout=2).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    raise TimeoutError(f"{name} not ready after {timeout:.0f}s:\n{log_tail()}")


@dataclass
class Child:
    module: str
    url: str
    log: Path
    proc: subprocess.Popen

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return "(no log)"


class Stack:
    """The encoder, the classifier and the gateway on 127.0.0.1, with their logs under ``var/log``."""

    def __init__(self, *, host: str = "127.0.0.1", var: Path = Path("var"), env: dict[str, str] | None = None) -> None:
        self.host = host
        self.var = var
        self.env = {**os.environ, **(env or {})}
        self.children: list[Child] = []

    def url(self, module: str) -> str:
        return next(c.url for c in self.children if c.module == module)

    def start(self, ready_timeout: float = 300.0) -> None:
        (self.var / "log").mkdir(parents=True, exist_ok=True)
        ports = {}
        for module, prefix, default_port in SERVICES:
            port = int(self.env.get(f"{prefix}PORT", default_port))
            ports[module] = port
            env = {**self.env, f"{prefix}HOST": self.host, f"{prefix}PORT": str(port)}
            env.setdefault("CLASSIFIER_STORE", str(self.var / "models"))
            env.setdefault("GATEWAY_ENCODER_URL", f"http://{self.host}:{ports.get('encoder_service', 8001)}")
            env.setdefault("GATEWAY_CLASSIFIER_URL", f"http://{self.host}:{ports.get('classifier_service', 8002)}")
            log = self.var / "log" / f"{module}.log"
            with log.open("ab") as out:
                proc = subprocess.Popen(service_command(module), env=env, stdout=out, stderr=subprocess.STDOUT)
            self.children.append(Child(module, f"http://{self.host}:{port}", log, proc))
        for child in self.children:
            wait_ready(child.url, child.proc, timeout=ready_timeout, name=child.module, log_tail=child.log_tail)

    def failed(self) -> Child | None:
        return next((c for c in self.children if c.proc.poll() is not None), None)

    def stop(self) -> None:
        for child in reversed(self.children):
            if child.proc.poll() is None:
                child.proc.terminate()
        for child in self.children:
            try:
                child.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                child.proc.kill()
