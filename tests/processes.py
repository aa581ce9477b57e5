"""Real service processes for integration tests: ``python -m <service>`` under uvicorn on
127.0.0.1, a free port, waited on until /readyz answers 200, stopped (or killed) on exit; and the
encoder and gateway processes the end-to-end tests start, trained and asked through plain HTTP."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import httpx

from seam.stack import free_port, wait_ready
from tests.support import ROOT, sample

PROBE = ["I was charged twice this month", "my parcel never arrived", "please reset my password"]
PREFIX = {"encoder_service": "ENCODER_", "classifier_service": "CLASSIFIER_", "gateway": "GATEWAY_",
          "tests.reliability.fake_upstream": "FAKE_"}


@dataclass
class ServiceProcess:
    module: str
    env: dict[str, str]
    port: int = field(default_factory=free_port)
    log: Path | None = None
    proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, *, ready_timeout: float = 120.0, wait_ready: bool = True) -> ServiceProcess:
        prefix = PREFIX[self.module]
        env = {**os.environ, **self.env, f"{prefix}HOST": "127.0.0.1", f"{prefix}PORT": str(self.port)}
        if self.log:
            with open(self.log, "ab") as out:  # the child keeps its own copy of the descriptor
                self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=env, stdout=out, stderr=subprocess.STDOUT)
        else:
            self.proc = subprocess.Popen([sys.executable, "-m", self.module], cwd=ROOT, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.STDOUT)
        if wait_ready:
            self.wait_ready(ready_timeout)
        return self

    def wait_ready(self, timeout: float = 120.0) -> None:
        assert self.proc is not None
        wait_ready(self.url, self.proc, timeout=timeout, name=self.module, log_tail=self.log_text)

    def log_text(self) -> str:
        return self.log.read_text(errors="replace")[-4000:] if self.log and self.log.exists() else "(no log)"

    def stop(self, *, kill: bool = False) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        self.proc.send_signal(signal.SIGKILL if kill else signal.SIGTERM)
        try:
            self.proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


@contextmanager
def running(module: str, env: dict[str, str], *, log: Path | None = None, port: int | None = None) -> Iterator[ServiceProcess]:
    service = ServiceProcess(module, env, log=log) if port is None else ServiceProcess(module, env, port=port, log=log)
    try:
        yield service.start()
    finally:
        service.stop()


def encoder(model: Path, var: Path, name: str, **env: str) -> ServiceProcess:
    return ServiceProcess("encoder_service", {"ENCODER_MODEL": str(model), "ENCODER_THREADS": "1", **env},
                          log=var / f"encoder-{name}.log")


def gateway(var: Path, name: str, classifier: ServiceProcess, encoders: dict[str, ServiceProcess], **env: str) -> ServiceProcess:
    listed = ",".join(f"{n}={e.url}" for n, e in encoders.items())
    return ServiceProcess("gateway", {
        "GATEWAY_ENCODERS": listed, "GATEWAY_CLASSIFIER_URL": classifier.url, "GATEWAY_RECHECK_INTERVAL_S": "0",
        "GATEWAY_PIPELINE_TTL_S": "0", "GATEWAY_TIMEOUT_S": "60", **env,
    }, log=var / f"gateway-{name}.log")


def started(*services: ServiceProcess) -> None:
    for service in services:  # start all, then wait: their imports overlap
        service.start(wait_ready=False)
    for service in services:
        service.wait_ready()


@contextmanager
def all_running(*services: ServiceProcess) -> Iterator[tuple[ServiceProcess, ...]]:
    """``started``, then each stopped on exit, the last started first."""
    try:
        started(*services)
        yield services
    finally:
        for service in reversed(services):
            service.stop()


def train(http: httpx.Client, gw: ServiceProcess, name: str, **extra) -> httpx.Response:
    texts, labels = sample()
    body = {"texts": texts, "labels": labels, "estimator": "logistic_regression", **extra}
    return http.post(f"{gw.url}/v1/pipelines/{name}/train", json=body)


def predict(http: httpx.Client, gw: ServiceProcess, name: str, version: int | None = None) -> httpx.Response:
    params = {"version": version} if version else {}
    return http.post(f"{gw.url}/v1/pipelines/{name}/predict", json={"texts": PROBE}, params=params)
