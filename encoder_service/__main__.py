"""``python -m encoder_service``: serve on ``ENCODER_HOST``:``ENCODER_PORT`` (127.0.0.1:8001)."""

import os

# OpenMP threads wait for the next operator by spinning, then sleeping. Spinning without end
# (OMP_WAIT_POLICY=ACTIVE) collapses when other processes share the cores (measured here: a MiniLM
# sentence in 164 ms instead of 17); sleeping at once (PASSIVE) pays a wake-up per operator (19-23 ms
# instead of 14-18). So spin briefly, well under a millisecond, then sleep. Only a lone pass uses
# more than one thread (encoder_service/streams.py). Must be set before torch starts OpenMP.
if "OMP_WAIT_POLICY" not in os.environ:
    os.environ.setdefault("GOMP_SPINCOUNT", "10000")

import uvicorn  # noqa: E402

from encoder_service.app import create_app  # noqa: E402
from encoder_service.settings import EncoderSettings  # noqa: E402
from services.memory import freeze_heap  # noqa: E402


def main() -> None:
    settings = EncoderSettings()
    app = create_app(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
