"""``python -m classifier_service``: serve on ``CLASSIFIER_HOST``:``CLASSIFIER_PORT`` (127.0.0.1:8002)."""

from __future__ import annotations

import os

# OpenMP threads sleep rather than spin while waiting, so torch heads (one thread by default,
# CLASSIFIER_TORCH_THREADS) never spin on cores the encoder needs. Set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import uvicorn  # noqa: E402

from classifier_service.app import create_app  # noqa: E402
from classifier_service.settings import ClassifierSettings  # noqa: E402
from services.logs import configure_logging  # noqa: E402
from services.memory import freeze_heap  # noqa: E402


def main() -> None:
    settings = ClassifierSettings()
    logging_options = configure_logging("classifier", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, **logging_options)


if __name__ == "__main__":
    main()
