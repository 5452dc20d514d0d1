"""Settings of the web service: the `service` section of `healthscore.yml`."""

from __future__ import annotations

from pydantic import Field

from healthscore.config.models import StrictModel

#: Default maximum size of a request body: 1 MiB.
DEFAULT_MAX_REQUEST_BYTES = 1024 * 1024
#: Default tolerance for ingested calls dated after their arrival: one day.
DEFAULT_FUTURE_TOLERANCE_SECONDS = 24 * 60 * 60.0


class ServiceSettings(StrictModel):
    """Address, limits and cross-origin access of `healthscore serve`."""

    host: str = Field(
        default="127.0.0.1",
        description="Address the service listens on; the default accepts local "
        "connections only.",
    )
    port: int = Field(
        default=8000, ge=1, le=65535, description="TCP port the service listens on."
    )
    workers: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Request processes. More than one serves requests on more CPU "
        "cores; one of them rescores ingested events for all.",
    )
    max_request_bytes: int = Field(
        default=DEFAULT_MAX_REQUEST_BYTES,
        ge=1,
        description="Largest accepted request body, in bytes; a larger one gets "
        "status 413.",
    )
    future_tolerance_seconds: float | None = Field(
        default=DEFAULT_FUTURE_TOLERANCE_SECONDS,
        ge=0,
        description="How long after the service received it an ingested Segment "
        "call or `/api/events` row may be dated, in seconds. A request with a call "
        "or row dated later gets status 422. 0 or null turns the check off. Files, "
        "read as a source or by `healthscore ingest`, are not checked.",
    )
    cors_origins: list[str] = Field(
        default_factory=list,
        description="Origins, such as `https://crm.example.com`, whose browser pages "
        "may call the API; empty (the default) turns cross-origin access off.",
    )
