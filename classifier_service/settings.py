"""Settings of the classifier service, read from ``CLASSIFIER_*`` environment variables."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field, field_validator
from pydantic_settings import SettingsConfigDict

from services.settings import ServiceSettings


class ClassifierSettings(ServiceSettings):
    """Environment variables prefixed ``CLASSIFIER_`` (``CLASSIFIER_STORE``, ``CLASSIFIER_PORT``, ...)."""

    model_config = SettingsConfigDict(env_prefix="CLASSIFIER_", extra="ignore", validate_default=True)

    port: int = Field(8002, ge=0, le=65535)
    # Fits carry token sequences (tens of MB as JSON), so the body cap is larger than the default.
    max_body_bytes: int = Field(256 * 1024 * 1024, gt=0, description="Largest request body accepted (413 above).")
    store: Path | str = Field(
        Path("var/models"),
        description="Model store: a directory (created if missing), or s3://bucket/prefix for an S3-compatible object "
        "store (endpoint, region and credentials from AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID, "
        "AWS_SECRET_ACCESS_KEY).",
    )
    store_cache: Path = Field(
        Path("var/cache/models"), description="With an object store: the local copies of the artifacts loaded."
    )
    store_cache_bytes: int = Field(
        1024 * 1024 * 1024, gt=0,
        description="With an object store: most bytes of local artifact copies kept; the least recently used go first.",
    )
    store_list_ttl_s: float = Field(
        1.0, ge=0,
        description="With an object store: how long a model's version listing is reused before the store is asked "
        "again (another replica's new version shows up within it).",
    )
    store_timeout_s: float = Field(
        5.0, gt=0, description="With an object store: longest wait to connect to it or for one answer (503 after)."
    )
    max_fit_rows: int = Field(100_000, gt=0, description="Most rows in one fit (413 above).")
    max_predict_rows: int = Field(10_000, gt=0, description="Most rows in one prediction (413 above).")
    fit_workers: int = Field(
        1, gt=0, description="Fits that run at once, each in its own worker process; predictions use threads."
    )
    fit_warmup: bool = Field(
        True, description="Start the fit workers' process server at start-up (it imports scikit-learn and torch: "
        "about 4 s of CPU and 310 MB), so the first fit does not wait for it; false for a replica that only "
        "predicts (it is then started by the first fit).",
    )
    fit_timeout_s: float = Field(
        600.0, gt=0, description="Longest a fit may train; past it its worker is stopped and the fit refused (422)."
    )
    max_model_parameters: int = Field(
        5_000_000, gt=0,
        description="Most weights a fitted model may have (e.g. an mlp's layers); a fit asking for more is refused (422).",
    )
    max_label_chars: int = Field(200, gt=0, description="Longest label, in characters (422 above).")
    max_source_depth: int = Field(
        16, gt=0, description="Deepest nesting of a fit's free-form source and params (422 deeper)."
    )
    max_source_bytes: int = Field(
        64 * 1024, gt=0, description="Largest source or params of a fit, as JSON bytes (413 above)."
    )
    max_pending_fits: int = Field(8, gt=0, description="Fits running or waiting; beyond it a fit gets 429.")
    torch_threads: int | None = Field(
        1, gt=0, description="torch intra-op threads of attention heads (tiny models: 1 is fastest); null: torch's choice."
    )
    stale_temp_seconds: float = Field(
        3600.0, ge=0, description="Leftover temporary directories of interrupted saves older than this are removed at start."
    )
    ood_threshold: float = Field(
        0.99, gt=0, le=1,
        description="A prediction is in distribution when its out-of-distribution score (the share of training "
        "rows closer to their class than it is to its nearest) is below this.",
    )

    @field_validator("store", mode="after")
    @classmethod
    def _directory_or_url(cls, value: Path | str) -> Path | str:
        text = str(value)
        if text.startswith("s3://"):
            bucket = text.removeprefix("s3://").split("/", 1)[0]
            if not bucket:
                raise ValueError("an object store is s3://bucket/prefix (the bucket is missing)")
            return text.rstrip("/")
        if "://" in text:
            raise ValueError(f"{text!r}: the store is a directory or s3://bucket/prefix")
        return Path(value)
