from __future__ import annotations

from pathlib import Path
from typing import Annotated

from pydantic import AnyHttpUrl, Field, SecretStr, field_validator
from pydantic_settings import NoDecode, SettingsConfigDict

from services.compatibility import DEFAULT_FINGERPRINT_TOLERANCE
from services.contracts import MODEL_NAME_PATTERN, is_valid_model_name
from services.settings import ServiceSettings

DEFAULT_ENCODER = "default"  # the name of GATEWAY_ENCODER_URL when GATEWAY_ENCODERS is unset


class GatewaySettings(ServiceSettings):
    """Environment variables prefixed ``GATEWAY_`` (``GATEWAY_ENCODER_URL``, ``GATEWAY_TIMEOUT_S``, ...)."""

    model_config = SettingsConfigDict(env_prefix="GATEWAY_", extra="ignore", validate_default=True)

    port: int = Field(8000, ge=0, le=65535)
    encoder_url: str = Field(
        "http://127.0.0.1:8001", description="Base URL of the encoder service, named 'default' (when GATEWAY_ENCODERS is unset)."
    )
    encoders: Annotated[dict[str, str], NoDecode] = Field(
        {},
        description="Several named encoders, 'name=url' comma-separated (minilm=http://127.0.0.1:8001,mpnet=http://"
        "127.0.0.1:8003); the first is the default for training. Unset: GATEWAY_ENCODER_URL, named 'default'.",
    )
    classifier_url: str = Field("http://127.0.0.1:8002", description="Base URL of the classifier service.")
    internal_token: SecretStr | None = Field(
        None,
        description="Sent as 'X-Seam-Internal-Token' to the encoder and the classifier (their internal token). "
        "The gateway is the public API: its own callers do not send it.",
    )
    api_keys: Annotated[list[SecretStr], NoDecode] = Field(
        [],
        description="Comma-separated API keys; when any is set (here or in api_keys_file), callers must send "
        "'Authorization: Bearer <key>' (401 without, 403 with a wrong one). Probes stay open.",
    )
    api_keys_file: Path | None = Field(
        None,
        description="A file of API keys: one per line ('#' comments ignored; every scope, every pipeline), or TOML "
        "[[keys]] tables with id, key (or 'sha256:<hex>'), scopes (predict, train, admin), pipelines (globs), rate "
        "and burst. Read at start and again on SIGHUP (a file that does not parse keeps the previous keys).",
    )
    timeout_s: float = Field(
        30.0, gt=0,
        description="Longest wait for one upstream call, and for a predict from its arrival to its answer, queued "
        "or not (504 after).",
    )
    fit_timeout_s: float = Field(600.0, gt=0, description="Longest wait for the classifier to fit a model (504 after).")
    connect_timeout_s: float = Field(2.0, gt=0, description="Longest wait to open a connection (503 after).")
    max_connections: int = Field(64, gt=0, description="Pooled connections per upstream.")
    max_texts: int = Field(256, gt=0, description="Most texts in one predict request (413 above).")
    max_train_texts: int = Field(100_000, gt=0, description="Most texts in one train request (413 above).")
    max_label_chars: int = Field(
        200, gt=0,
        description="Most characters in one training label (413 above): every prediction repeats each class's label.",
    )
    train_chunk_size: int = Field(128, gt=0, description="Texts per encoder call when encoding a training set.")
    train_concurrency: int = Field(2, gt=0, description="Encoder calls in flight at once when training.")
    pipeline_ttl_s: float = Field(
        2.0, ge=0, description="How long a resolved pipeline version is reused before the classifier is asked again."
    )
    recheck_interval_s: float = Field(
        1.0,
        ge=0,
        description="A refused pipeline re-reads the encoder's contracts at most this often, so that an encoder "
        "restarted with the fitted model is accepted again without a gateway restart.",
    )
    coalesce_max_in_flight: int = Field(
        1, gt=0,
        description="Merged predict runs in flight per pipeline version; requests arriving meanwhile go together "
        "(1: the fewest, largest encoder passes, the best throughput measured on 2 cores).",
    )
    max_chain_depth: int = Field(8, gt=0, description="Most links in a pipeline chain.")
    reference_sample: int = Field(
        64, ge=0, description="Training texts kept per version, stratified by label, with the probabilities the version "
        "gave them, to measure an encoder that computes the same space differently (0: none, exact matching only).",
    )
    min_agreement: float = Field(
        0.99, gt=0, description="Label agreement on the reference sample at which an encoder computing the same space "
        "differently (dtype, backend) is accepted; above 1, never (the measurement is still reported).",
    )
    near_tie_margin: float = Field(
        0.01, ge=0, lt=1,
        description="Where an encoder computes in another precision than float32 (bfloat16), a predicted label whose "
        "two highest probabilities are closer than this (or than 4x the largest change measured on the version's "
        "reference sample) is decided again from vectors computed in float32, so that the labels are float32's "
        "(0: never; bfloat16 moved a MiniLM logistic regression's margins by at most 0.004 here).",
    )
    drift_window: int = Field(
        1000, gt=0, le=1_000_000,
        description="Out-of-distribution scores of the last this many predictions kept per pipeline, for "
        "GET /v1/pipelines/{name}/drift (in this gateway's memory).",
    )
    max_evaluate_texts: int = Field(10_000, gt=0, description="Most texts in one evaluate request (413 above).")
    fingerprint_tolerance: float = Field(
        DEFAULT_FINGERPRINT_TOLERANCE, gt=0, le=1, description="Lowest cosine between canary vectors of one space."
    )

    @field_validator("api_keys", mode="before")
    @classmethod
    def _comma_separated(cls, value: object) -> object:
        if isinstance(value, str):
            return [key.strip() for key in value.split(",") if key.strip()]
        return value

    @field_validator("encoders", mode="before")
    @classmethod
    def _named_urls(cls, value: object) -> object:
        if not isinstance(value, str):
            return value
        named: dict[str, str] = {}
        for item in (part.strip() for part in value.split(",")):
            if not item:
                continue
            name, sep, url = item.partition("=")
            name, url = name.strip(), url.strip()
            if not sep or not name or not url:
                raise ValueError(f"{item!r} is not name=url (GATEWAY_ENCODERS is 'name=url,name=url')")
            if name in named:
                raise ValueError(f"encoder {name!r} is listed twice in GATEWAY_ENCODERS")
            named[name] = url
        return named

    @field_validator("encoders")
    @classmethod
    def _valid_encoders(cls, value: dict[str, str]) -> dict[str, str]:
        for name, url in value.items():
            if not is_valid_model_name(name):
                raise ValueError(f"encoder name {name!r} does not match {MODEL_NAME_PATTERN} (GATEWAY_ENCODERS)")
            AnyHttpUrl(url)
        return {name: url.rstrip("/") for name, url in value.items()}

    def encoder_urls(self) -> dict[str, str]:
        """The registered encoders in order, the first being the default for training."""
        return dict(self.encoders) if self.encoders else {DEFAULT_ENCODER: self.encoder_url}

    @field_validator("encoder_url", "classifier_url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        AnyHttpUrl(value)  # refuses what is not an http(s) URL, at start
        return value.rstrip("/")
