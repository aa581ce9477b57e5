"""``python -m encoder_service``: serve on ``ENCODER_HOST``:``ENCODER_PORT`` (127.0.0.1:8001)."""

import os

# OpenMP threads that spin while waiting collapse when another process shares the cores (the gateway,
# the classifier, a load generator): measured here, a MiniLM sentence took 164 ms instead of 17 ms
# with 2 spinning threads on 2 busy cores. Sleep instead; must be set before torch starts OpenMP.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

import uvicorn  # noqa: E402

from encoder_service.app import create_app  # noqa: E402
from encoder_service.settings import EncoderSettings  # noqa: E402


def main() -> None:
    settings = EncoderSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
