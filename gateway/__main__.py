import logging

import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.memory import freeze_heap


def main() -> None:
    settings = GatewaySettings()
    # Key reloads and admin actions (seam.access) are logged at INFO.
    logging.basicConfig(level=settings.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    app = create_app(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
