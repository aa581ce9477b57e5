"""HTTP routes of the upgrade path (``gateway.upgrade``): aliases, refit, compare."""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import Path
from fastapi import APIRouter
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr

from gateway.routes import PipelineName, Runtime
from gateway.upgrade import Upgrader
from services.inputs import Text

router = APIRouter(tags=["upgrade"])
AliasName = Annotated[str, Path(description="Alias name (like a pipeline name): production, canary, ...",
                                openapi_examples={"production": {"summary": "what a plain predict serves",
                                                                 "value": "production"}})]
VersionOrAlias = StrictInt | StrictStr


class AliasMove(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"version": 2}]})

    version: StrictInt = Field(gt=0, description="The version the alias points at from now on.")


class Reused(BaseModel):
    model_config = ConfigDict(extra="forbid")

    pipeline: StrictStr
    version: StrictInt = Field(gt=0, description="A version in the chain ...")
    refitted: StrictInt = Field(gt=0, description="... already refitted as this version: used instead of fitting it again.")


class RefitRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [{"encoder": "default"}]})

    encoder: StrictStr = Field(description="The registered encoder to refit through (GET /v1/encoders).")
    version: StrictInt | None = Field(None, gt=0, description="The version to refit; default: the one served "
                                      "(production when set, else the latest).")
    promote: StrictBool = Field(False, description="Move production to the new versions once every one is fitted "
                                "and passes its own check. Without it, production stays where it is (set to the "
                                "served version when it was unset).")
    reuse: list[Reused] = Field(default_factory=list, description="Versions of the chain already refitted "
                                "(seam migrate refits a shared base once).")


class CompareRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", json_schema_extra={"examples": [
        {"texts": ["Where is my parcel?"], "labels": ["shipping"], "a": 1, "b": "production"}]})

    texts: list[Text] = Field(min_length=1, description="Texts both versions label (at most GATEWAY_MAX_TRAIN_TEXTS).")
    labels: list[Text] | None = Field(None, description="The true label of each text: adds accuracy and macro-F1.")
    a: VersionOrAlias = Field(description="A version number or an alias.")
    b: VersionOrAlias = Field(description="A version number or an alias.")


@router.get("/v1/pipelines/{name}/aliases")
async def list_aliases(name: PipelineName, runtime: Runtime) -> JSONResponse:
    """The pipeline's aliases: ``{"aliases": {"production": 2}}``."""
    return JSONResponse(await Upgrader(runtime).list_aliases(name))


@router.put("/v1/pipelines/{name}/aliases/{alias}")
async def put_alias(name: PipelineName, alias: AliasName, body: AliasMove, runtime: Runtime) -> JSONResponse:
    """Points the alias at a version, once a registered encoder can serve that version (409 with the
    mismatches otherwise). Every gateway sees the move within GATEWAY_PIPELINE_TTL_S. Roll back: move it back."""
    return JSONResponse(await Upgrader(runtime).move_alias(name, alias, body.version))


@router.delete("/v1/pipelines/{name}/aliases/{alias}")
async def delete_alias(name: PipelineName, alias: AliasName, runtime: Runtime) -> JSONResponse:
    """Removes the alias (without production, a plain predict serves the latest version)."""
    return JSONResponse(await Upgrader(runtime).remove_alias(name, alias))


@router.post("/v1/pipelines/{name}/refit", status_code=201)
async def refit(name: PipelineName, body: RefitRequest, runtime: Runtime) -> JSONResponse:
    """Fits the pipeline's chain again from its kept training texts through another encoder, bottom-up, and
    compares each new version with the old one (encoders, cross-validated accuracy, label agreement)."""
    reuse = {(r.pipeline, r.version): r.refitted for r in body.reuse}
    result: dict[str, Any] = await Upgrader(runtime).refit(name, body.encoder, body.version, promote=body.promote,
                                                           reuse=reuse)
    return JSONResponse(result, status_code=201)


@router.post("/v1/pipelines/{name}/compare")
async def compare(name: PipelineName, body: CompareRequest, runtime: Runtime) -> JSONResponse:
    """Two versions (or aliases) on the same texts, each on its own encoder, at once: every text's label and
    probability from both, their agreement, and with labels the accuracy and macro-F1 of each."""
    return JSONResponse(await Upgrader(runtime).compare(name, body.texts, body.labels, body.a, body.b))
