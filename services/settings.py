"""Settings shared by the three services. Each service subclasses ``ServiceSettings`` with its own
environment prefix (``ENCODER_``, ``CLASSIFIER_``, ``GATEWAY_``); values are validated at start."""

from __future__ import annotations

from typing import Literal

from pydantic import Field, SecretStr
from pydantic_settings import BaseSettings, SettingsConfigDict


class ServiceSettings(BaseSettings):
    model_config = SettingsConfigDict(extra="ignore", validate_default=True)

    host: str = Field("127.0.0.1", description="Interface to listen on.")
    port: int = Field(8000, ge=0, le=65535, description="Port to listen on.")
    max_body_bytes: int = Field(16 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above).")
    max_in_flight: int = Field(
        256, gt=0, description="Requests handled at once (probes aside); one more gets 429 with Retry-After."
    )
    body_timeout_s: float = Field(
        30.0, gt=0,
        description="Longest time to receive a request body (408 after); a request counts against max_in_flight only once its body is in.",
    )
    max_json_depth: int = Field(
        64, ge=2, le=500, description="Deepest nesting of JSON arrays and objects in a body (400 deeper), checked before parsing.",
    )
    internal_token: SecretStr | None = Field(
        None, description="When set, callers must send it as 'X-Seam-Internal-Token' (service-to-service)."
    )
    log_level: str = Field("info", description="Logging level.")
    log_format: Literal["text", "json"] = Field(
        "text", description="Log lines as text, or as one JSON object per line (time, level, service, request and trace ids, fields)."
    )
