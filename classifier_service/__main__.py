"""``python -m classifier_service``: serve on ``CLASSIFIER_HOST``:``CLASSIFIER_PORT`` (127.0.0.1:8002)."""

from __future__ import annotations

import logging

import uvicorn

from classifier_service.app import create_app
from classifier_service.settings import ClassifierSettings


def main() -> None:
    settings = ClassifierSettings()
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
