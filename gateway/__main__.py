import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.logs import configure_logging
from services.memory import freeze_heap


def main() -> None:
    settings = GatewaySettings()
    # Key reloads and admin actions (seam.access) are logged at INFO, as each request is (seam.requests).
    logging_options = configure_logging("gateway", level=settings.log_level, fmt=settings.log_format)
    app = create_app(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, **logging_options)


if __name__ == "__main__":
    main()
