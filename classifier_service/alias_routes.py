"""Internal routes of a model's aliases (``classifier_service.aliases``): the gateway reads and moves them."""

from __future__ import annotations

from typing import Annotated, Any

import anyio
from fastapi import APIRouter, Path
from pydantic import BaseModel, ConfigDict, Field, StrictInt

from classifier_service.aliases import AliasStore
from classifier_service.deps import ModelName, Runtime
from classifier_service.runtime import ClassifierRuntime

router = APIRouter(tags=["aliases"])
AliasName = Annotated[str, Path(description="Alias name (like a model name).",
                                openapi_examples={"production": {"summary": "the default", "value": "production"}})]


class AliasMove(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 1}]})

    version: StrictInt = Field(gt=0, description="The version the alias points at from now on.")
    expected: StrictInt | None = Field(
        None, ge=0, description="Move only if the alias points at this version now (0: not set); 409 otherwise."
    )


def _aliases(runtime: ClassifierRuntime) -> AliasStore:
    return runtime.aliases


@router.get("/v1/models/{name}/aliases")
async def get_aliases(name: ModelName, runtime: Runtime) -> dict[str, Any]:
    """The model's aliases, ``{"aliases": {"production": 3}}``; none for a model without any."""
    return {"name": name, "aliases": await anyio.to_thread.run_sync(_aliases(runtime).get, name)}


@router.put("/v1/models/{name}/aliases/{alias}")
async def put_alias(name: ModelName, alias: AliasName, body: AliasMove, runtime: Runtime) -> dict[str, Any]:
    """Points the alias at a version that exists (404 otherwise); atomic for every process sharing the store."""
    def move() -> dict[str, int]:
        runtime.get(name, body.version)  # ModelNotFound: 404 listing the versions
        return _aliases(runtime).set(name, alias, body.version, expected=body.expected)

    return {"name": name, "aliases": await anyio.to_thread.run_sync(move)}


@router.delete("/v1/models/{name}/aliases/{alias}")
async def delete_alias(name: ModelName, alias: AliasName, runtime: Runtime) -> dict[str, Any]:
    return {"name": name, "aliases": await anyio.to_thread.run_sync(_aliases(runtime).delete, name, alias)}
