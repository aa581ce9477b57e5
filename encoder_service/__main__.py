import uvicorn

from encoder_service.app import create_app
from encoder_service.settings import EncoderSettings


def main() -> None:
    settings = EncoderSettings()
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level=settings.log_level)


if __name__ == "__main__":
    main()
