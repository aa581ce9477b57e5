import uvicorn

from gateway.app import create_app
from gateway.settings import GatewaySettings
from services.memory import freeze_heap


def main() -> None:
    settings = GatewaySettings()
    app = create_app(settings)
    freeze_heap()
    uvicorn.run(app, host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
