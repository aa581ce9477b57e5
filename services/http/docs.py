"""API docs that load where seam runs: each service's ``/docs`` (Swagger UI) and ``/redoc`` pages take
their scripts, styles and icon from the package itself (fastapi-offline bundles them), never from a
public CDN, so they render on an offline or firewalled host."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import fastapi_offline
from fastapi import FastAPI

ASSETS_URL = "/static-offline-docs"
_ASSETS = Path(fastapi_offline.__file__).parent / "static"


def documented_app(**kwargs: Any) -> FastAPI:
    """A FastAPI app whose /docs and /redoc serve their assets from ``ASSETS_URL``."""
    return fastapi_offline.FastAPIOffline(static_url=ASSETS_URL, **kwargs)


def docs_paths() -> frozenset[str]:
    """Every path the docs pages need: left open where an API key guards the rest (exact paths)."""
    assets = {f"{ASSETS_URL}/{asset.name}" for asset in _ASSETS.iterdir() if asset.is_file()}
    return frozenset({"/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json", *assets})
