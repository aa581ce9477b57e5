"""API keys of the gateway's public API: ``GATEWAY_API_KEYS`` and/or ``GATEWAY_API_KEYS_FILE``.

No key configured: the gateway is open (a local or already-guarded deployment). Any key configured:
every route but the probes and the API docs needs ``Authorization: Bearer <key>``. The guard itself
is :class:`services.auth.TokenGuardMiddleware`, shared with the services' internal token.
"""

from __future__ import annotations

from services.auth import OPEN_PATHS, Credentials
from services.docs import docs_paths
from gateway.settings import GatewaySettings

DOC_PATHS = docs_paths()  # the pages, the schema and their assets
PUBLIC_PATHS = OPEN_PATHS | DOC_PATHS


class ApiKeysError(ValueError):
    """The configured keys cannot be used; raised at start, so a misconfigured gateway never opens."""


def read_keys_file(settings: GatewaySettings) -> list[str]:
    path = settings.api_keys_file
    if path is None:
        return []
    try:
        lines = path.read_text(encoding="utf-8").splitlines()
    except (OSError, UnicodeDecodeError) as exc:
        raise ApiKeysError(f"GATEWAY_API_KEYS_FILE={path} cannot be read: {exc.__class__.__name__}") from exc
    keys = [line.strip() for line in lines if line.strip() and not line.lstrip().startswith("#")]
    if not keys:
        # An empty file must not silently open the gateway.
        raise ApiKeysError(f"GATEWAY_API_KEYS_FILE={path} holds no key (one key per line)")
    return keys


def api_key_credentials(settings: GatewaySettings) -> Credentials | None:
    """The keys the gateway accepts, or None when none is configured (the gateway is open)."""
    keys = [key.get_secret_value().strip() for key in settings.api_keys] + read_keys_file(settings)
    keys = [key for key in keys if key]
    if not keys:
        return None
    if any(any(c.isspace() for c in key) for key in keys):
        raise ApiKeysError("an API key contains whitespace; keys are single tokens (one per line in the file)")
    return Credentials(
        secrets=tuple(dict.fromkeys(key.encode() for key in keys)),
        missing_hint="This gateway needs an API key: send 'Authorization: Bearer <API key>'.",
        wrong_hint="The API key sent is not valid for this gateway.",
    )
