"""API keys of the gateway's public API: ``GATEWAY_API_KEYS`` and/or ``GATEWAY_API_KEYS_FILE``.

No key configured: the gateway is open (a local or already-guarded deployment). Any key configured:
every route but the probes and the API docs needs ``Authorization: Bearer <key>``.

The file holds either one key per line (each key: every scope, every pipeline) or TOML::

    [[keys]]
    id = "reporting"            # named in logs and metrics; the key itself never is
    key = "sha256:9f86d0..."    # the SHA-256 of the key (hex), or the key itself
    scopes = ["predict"]        # predict | train | admin (delete, aliases, refit, migrate)
    pipelines = ["support-*"]   # optional globs; absent: all
    rate = 5                    # optional: requests per second, with...
    burst = 10                  # ...this many at once

It is re-read on SIGHUP (:meth:`ApiKeys.reload`); a file that does not parse keeps the previous keys.
The guard itself is :class:`services.http.auth.ScopedKeyGuardMiddleware`.
"""

from __future__ import annotations

import logging
import re
import tomllib
from typing import Any
from urllib.parse import unquote

from services.http.auth import OPEN_PATHS, SCOPES, KeyAccess, KeyRing, Need, ScopedKey, key_digest
from services.http.docs import docs_paths
from gateway.settings import GatewaySettings

log = logging.getLogger("seam.access")

DOC_PATHS = docs_paths()  # the pages, the schema and their assets
PUBLIC_PATHS = OPEN_PATHS | DOC_PATHS
# Path segments of a pipeline's admin actions (DELETE is admin whatever the path).
ADMIN_SEGMENTS = frozenset({"aliases", "refit", "migrate"})
_PIPELINE_PATH = re.compile(r"^/v1/pipelines/(?P<name>[^/]+)(?P<rest>/.*)?$")
_KEY_FIELDS = {"id", "key", "scopes", "pipelines", "rate", "burst"}
_HEX64 = re.compile(r"^[0-9a-f]{64}$")


class ApiKeysError(ValueError):
    """The configured keys cannot be used; raised at start, so a misconfigured gateway never opens."""


def route_need(method: str, path: str) -> Need:
    """The scope a gateway route needs, and the pipeline it touches. Reads need any valid key."""
    match = _PIPELINE_PATH.match(path)
    pipeline = unquote(match["name"]) if match else None
    segments = set((match["rest"] or "").split("/")) if match else set(path.split("/"))
    if method == "DELETE" or segments & ADMIN_SEGMENTS:
        return Need("admin", pipeline)
    if method in ("GET", "HEAD", "OPTIONS"):
        return Need(None, pipeline)
    if match and match["rest"] == "/train":
        return Need("train", pipeline)
    return Need("predict", pipeline)


def _is_toml(path, text: str) -> bool:
    return path.suffix == ".toml" or any(line.strip().startswith("[") for line in text.splitlines())


def _toml_key(entry: Any, where: str) -> ScopedKey:
    if not isinstance(entry, dict):
        raise ApiKeysError(f"{where} is not a table; write each key as a [[keys]] table")
    unknown = set(entry) - _KEY_FIELDS
    if unknown:
        raise ApiKeysError(f"{where} has unknown fields {sorted(unknown)}; a key has {sorted(_KEY_FIELDS)}")
    key_id, secret = entry.get("id"), entry.get("key")
    if not isinstance(key_id, str) or not re.fullmatch(r"[A-Za-z0-9_.:-]{1,64}", key_id):
        raise ApiKeysError(f"{where} needs an id: 1-64 letters, digits, '_', '.', ':' or '-'")
    where = f"{where} (id {key_id!r})"
    if not isinstance(secret, str) or not secret.strip() or any(c.isspace() for c in secret.strip()):
        raise ApiKeysError(f"{where} needs a key: the key itself or 'sha256:<64 hex digits>', without whitespace")
    secret = secret.strip()
    if secret.startswith("sha256:"):
        hexdigest = secret.removeprefix("sha256:").lower()
        if not _HEX64.match(hexdigest):
            raise ApiKeysError(f"{where}: 'sha256:' must be followed by 64 hex digits (the SHA-256 of the key)")
        digest = bytes.fromhex(hexdigest)
    else:
        digest = key_digest(secret)
    scopes = entry.get("scopes", list(SCOPES))
    if not isinstance(scopes, list) or not scopes or not all(s in SCOPES for s in scopes):
        raise ApiKeysError(f"{where}: scopes must be a non-empty list of {', '.join(SCOPES)}; got {scopes!r}")
    pipelines = entry.get("pipelines")
    if pipelines is not None and (not isinstance(pipelines, list) or not all(isinstance(p, str) and p for p in pipelines)):
        raise ApiKeysError(f"{where}: pipelines must be a list of names or globs ('support-*'); got {pipelines!r}")
    rate, burst = entry.get("rate"), entry.get("burst")
    if rate is not None and (isinstance(rate, bool) or not isinstance(rate, int | float) or rate <= 0):
        raise ApiKeysError(f"{where}: rate must be a number of requests per second above 0; got {rate!r}")
    if burst is not None and (rate is None or isinstance(burst, bool) or not isinstance(burst, int) or burst < 1):
        raise ApiKeysError(f"{where}: burst must be a whole number of at least 1, given with a rate; got {burst!r}")
    return ScopedKey(id=key_id, digest=digest, scopes=frozenset(scopes),
                     pipelines=tuple(pipelines) if pipelines is not None else None,
                     rate=float(rate) if rate is not None else None, burst=burst)


def parse_keys_file(path, text: str) -> list[ScopedKey]:
    """The keys in a file's text: TOML ``[[keys]]`` tables, or one key per line ('#' comments)."""
    name = f"GATEWAY_API_KEYS_FILE={path}"
    if _is_toml(path, text):
        try:
            document = tomllib.loads(text)
        except tomllib.TOMLDecodeError as exc:
            raise ApiKeysError(f"{name} is not valid TOML: {exc}") from exc
        entries = document.get("keys")
        if set(document) - {"keys"}:
            raise ApiKeysError(f"{name} has tables other than [[keys]]: {sorted(set(document) - {'keys'})}")
        if not isinstance(entries, list) or not entries:
            raise ApiKeysError(f"{name} holds no key (write each as a [[keys]] table)")
        return [_toml_key(entry, f"{name}: key {i + 1}") for i, entry in enumerate(entries)]
    lines = [line.strip() for line in text.splitlines()]
    keys = [line for line in lines if line and not line.startswith("#")]
    if not keys:
        # An empty file must not silently open the gateway.
        raise ApiKeysError(f"{name} holds no key (one key per line)")
    if any(any(c.isspace() for c in key) for key in keys):
        raise ApiKeysError(f"{name}: an API key contains whitespace; keys are single tokens (one per line)")
    return [ScopedKey(id=f"file-{i + 1}", digest=key_digest(key)) for i, key in enumerate(dict.fromkeys(keys))]


def read_keys(settings: GatewaySettings) -> list[ScopedKey]:
    """Every configured key: ``GATEWAY_API_KEYS`` (ids ``env-1``...) and the file."""
    env_keys = [key.get_secret_value().strip() for key in settings.api_keys]
    env_keys = [key for key in env_keys if key]
    if any(any(c.isspace() for c in key) for key in env_keys):
        raise ApiKeysError("an API key in GATEWAY_API_KEYS contains whitespace; keys are single tokens")
    keys = [ScopedKey(id=f"env-{i + 1}", digest=key_digest(key)) for i, key in enumerate(dict.fromkeys(env_keys))]
    path = settings.api_keys_file
    if path is not None:
        try:
            text = path.read_text(encoding="utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ApiKeysError(f"GATEWAY_API_KEYS_FILE={path} cannot be read: {exc.__class__.__name__}") from exc
        keys += parse_keys_file(path, text)
    ids = [key.id for key in keys]
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise ApiKeysError(f"two keys share the id(s) {dup} (GATEWAY_API_KEYS_FILE, GATEWAY_API_KEYS); ids must be unique")
    return keys


class ApiKeys(KeyAccess):
    """The gateway's keys, re-read by :meth:`reload` (on SIGHUP)."""

    def __init__(self, settings: GatewaySettings, keys: list[ScopedKey]) -> None:
        source = f"GATEWAY_API_KEYS_FILE ({settings.api_keys_file})" if settings.api_keys_file else "GATEWAY_API_KEYS"
        super().__init__(KeyRing(keys), route_need, source=source)
        self.settings = settings

    def reload(self) -> bool:
        """Re-reads the keys; on any error keeps the previous ones and logs why. True when swapped."""
        try:
            keys = read_keys(self.settings)
            if not keys:
                raise ApiKeysError("no key is configured any more; an open gateway needs a restart without keys")
            ring = KeyRing(keys)
        except (ApiKeysError, ValueError) as exc:
            log.error("API keys not reloaded, the previous %d keys stay in force: %s", len(self.ring.keys), exc)
            return False
        self.ring = ring
        log.info("API keys reloaded: %d keys (%s)", len(keys), ", ".join(key.id for key in keys))
        return True


def api_keys(settings: GatewaySettings) -> ApiKeys | None:
    """The keys the gateway accepts, or None when none is configured (the gateway is open)."""
    keys = read_keys(settings)
    return ApiKeys(settings, keys) if keys else None
