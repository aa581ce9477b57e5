"""The benchmark's real peer: Infinity (``infinity-emb``, torch engine) serving the same MiniLM folder.

It lives in an environment of its own, ``bench/.work/peers/infinity`` (``make bench-peers`` creates it:
its pins do not fit seam's). bench.run starts it on 127.0.0.1, at the precision of the run
(``--dtype float32`` or ``bfloat16``), and sends the same texts at the same load to its OpenAI-style
``POST /embeddings``. Without the environment the peer's column is skipped, saying so.
"""

from __future__ import annotations

import os
import subprocess
import time
from pathlib import Path

import httpx

INFINITY_VENV = Path(__file__).resolve().parent / ".work" / "peers" / "infinity"
SERVED_NAME = "minilm"


class PeerUnavailable(RuntimeError):
    """The peer cannot run here; the message says why and what to do."""


class InfinityPeer:
    name = "infinity"

    def __init__(self, model_folder: str, precision: str, port: int, *, venv: Path = INFINITY_VENV, log: Path | None = None) -> None:
        self.model_folder, self.precision, self.port, self.venv, self.log = model_folder, precision, port, venv, log
        self.proc: subprocess.Popen | None = None

    @property
    def executable(self) -> Path:
        return self.venv / "bin" / "infinity_emb"

    def check(self) -> None:
        """Refuse, saying how to fix it, when the peer's environment is not there."""
        if not self.executable.is_file() or not (self.venv / ".installed").is_file():
            raise PeerUnavailable(
                f"Infinity's environment is absent ({self.executable} not found, or its install did not finish): "
                "run `make bench-peers` to create it (its own venv, CPU torch); the peer's column is skipped"
            )

    def command(self) -> list[str]:
        return [str(self.executable), "v2", "--model-id", self.model_folder, "--served-model-name", SERVED_NAME,
                "--host", "127.0.0.1", "--port", str(self.port), "--engine", "torch", "--device", "cpu",
                "--dtype", self.precision, "--batch-size", "32", "--no-bettertransformer", "--no-vector-disk-cache"]

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def body(self, texts: list[str]) -> dict:
        return {"model": SERVED_NAME, "input": texts}

    def start(self, timeout: float = 300.0) -> None:
        self.check()
        env = {**os.environ, "HF_HUB_OFFLINE": "1", "DO_NOT_TRACK": "1", "INFINITY_ANONYMOUS_USAGE_STATS": "0"}
        out = self.log.open("ab") if self.log else subprocess.DEVNULL
        try:
            self.proc = subprocess.Popen(self.command(), env=env, stdout=out, stderr=subprocess.STDOUT)
        finally:
            if self.log:
                out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise PeerUnavailable(f"Infinity exited with code {self.proc.returncode} at start; see {self.log}")
            try:
                if httpx.get(self.url + "/health", timeout=2).status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.5)
        self.stop()
        raise PeerUnavailable(f"Infinity not ready after {timeout:.0f} s; see {self.log}")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
