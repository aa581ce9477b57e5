"""``python -m gateway``: serve on ``GATEWAY_HOST``:``GATEWAY_PORT``. Key reloads and admin actions
(``seam.access``) are logged at INFO, as each request is (``seam.requests``)."""

from gateway.settings import GatewaySettings
from services.http.app import serve


def main() -> None:
    serve("gateway", GatewaySettings(), "gateway.app:create_app")


if __name__ == "__main__":
    main()
