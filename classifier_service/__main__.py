"""``python -m classifier_service``: serve on ``CLASSIFIER_HOST``:``CLASSIFIER_PORT`` (127.0.0.1:8002)."""

from __future__ import annotations

import os

# OpenMP threads sleep rather than spin while waiting, so torch heads (one thread by default,
# CLASSIFIER_TORCH_THREADS) never spin on cores the encoder needs. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

from classifier_service.settings import ClassifierSettings  # noqa: E402
from services.http.app import serve  # noqa: E402


def main() -> None:
    serve("classifier", ClassifierSettings(), "classifier_service.app:create_app")


if __name__ == "__main__":
    main()
