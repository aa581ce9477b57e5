"""Who gets in: the gateway's API keys, the services' internal token, and only safe model formats."""

from __future__ import annotations

import hashlib
import json
import logging
import pickle
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from encoder_service.runtime import EncoderRuntime, ModelLoadError
from encoder_service.settings import EncoderSettings
from gateway.auth import ApiKeysError
from services.http.auth import TokenBucket
from services.contracts import TensorContract
from gateway.settings import GatewaySettings
from tests.classifier_service.synthetic import classifier_client, fit
from tests.gateway.fakes import FakeClassifier, FakeEncoder
from tests.support import assert_problem, encoder_client, gateway_app, keys_toml, serve

KEYS = ("k-alpha-3f9c2a61d0", "k-beta-77e1b0c4aa")


def gateway(encoder_url: str = "http://e", *, encoder: FakeEncoder | None = None, classifier: FakeClassifier | None = None,
            **settings):
    """A gateway over fakes with these settings, its lifespan not yet run (each ``call`` runs it)."""
    return gateway_app(GatewaySettings(encoder_url=encoder_url, classifier_url="http://c", **settings),
                       encoder=encoder or FakeEncoder(), classifier=classifier or FakeClassifier())


async def call(app, method: str, path: str, key: str | None = None, scheme: str = "Bearer", **kwargs) -> httpx.Response:
    headers = {"Authorization": f"{scheme} {key}"} if key is not None else {}
    async with serve(app, "http://gw") as client:
        return await client.request(method, path, headers=headers, **kwargs)


# --- API keys on the gateway -----------------------------------------------------------------------------


async def test_api_keys_401_without_403_wrong_200_right(caplog):
    caplog.set_level(logging.DEBUG)
    app = gateway(api_keys=",".join(KEYS))
    listing = ("GET", "/v1/pipelines")
    response = await call(app, *listing)
    assert_problem(response, 401, "Authorization: Bearer")
    assert response.headers["www-authenticate"] == "Bearer"
    assert_problem(await call(app, *listing, key=KEYS[0], scheme="Basic"), 401, "Bearer")
    assert_problem(await call(app, *listing, key=""), 401, "Bearer")
    wrong = await call(app, *listing, key=KEYS[0] + "x")
    assert_problem(wrong, 403, "not valid")
    assert KEYS[0] not in wrong.text
    for key in KEYS:
        assert (await call(app, *listing, key=key)).status_code == 200
    assert (await call(app, *listing, key=KEYS[1], scheme="bearer")).status_code == 200
    body = {"texts": ["hi"]}
    assert_problem(await call(app, "POST", "/v1/pipelines/x/predict", json=body), 401, "Bearer")
    assert_problem(await call(app, "POST", "/v1/pipelines/x/predict", key="nope", json=body), 403, "not valid")
    for path in ("/healthz", "/readyz", "/openapi.json", "/docs"):  # probes and docs stay open
        assert (await call(app, "GET", path)).status_code == 200, path
    assert all(key not in caplog.text for key in KEYS)
    assert "nope" not in caplog.text


async def test_api_keys_from_a_file(tmp_path):
    keys = tmp_path / "keys"
    keys.write_text(f"# rotated 2024-05\n{KEYS[0]}\n\n   {KEYS[1]}  \n")
    app = gateway(api_keys_file=keys)
    assert (await call(app, "GET", "/v1/pipelines", key=KEYS[1])).status_code == 200
    assert (await call(app, "GET", "/v1/pipelines", key="# rotated 2024-05")).status_code == 403
    both = gateway(api_keys="k-from-env-0001", api_keys_file=keys)  # both sources count
    assert (await call(both, "GET", "/v1/pipelines", key="k-from-env-0001")).status_code == 200
    assert (await call(both, "GET", "/v1/pipelines", key=KEYS[0])).status_code == 200


@pytest.mark.parametrize("content", ["", "# only a comment\n\n", None])
def test_a_keys_file_without_keys_never_opens_the_gateway(tmp_path, content):
    keys = tmp_path / "keys"
    if content is not None:
        keys.write_text(content)
    with pytest.raises(ApiKeysError, match="GATEWAY_API_KEYS_FILE"):
        gateway(api_keys_file=keys)


def test_api_keys_from_the_environment(monkeypatch):
    monkeypatch.setenv("GATEWAY_API_KEYS", f" {KEYS[0]} , {KEYS[1]} ,")
    settings = GatewaySettings()
    assert [k.get_secret_value() for k in settings.api_keys] == list(KEYS)
    assert KEYS[0] not in repr(settings) and KEYS[0] not in str(settings.model_dump())


async def test_no_keys_means_an_open_gateway():
    assert (await call(gateway(), "GET", "/v1/pipelines")).status_code == 200


async def test_the_gateway_readyz_tells_ready_or_not_to_anyone_and_the_details_to_key_holders():
    encoder = FakeEncoder()
    app = gateway("http://encoder.internal:8001", encoder=encoder, api_keys=",".join(KEYS))
    async with serve(app, "http://gw") as client:
        anonymous = await client.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
        detailed = (await client.get("/readyz", headers={"Authorization": f"Bearer {KEYS[0]}"})).json()
        assert detailed["encoder"]["url"] == "http://encoder.internal:8001"
        assert (await client.get("/readyz", headers={"Authorization": "Bearer nope"})).json() == {"status": "ready"}

        encoder.fault = lambda request: httpx.Response(503, json={"detail": "model still loading"})
        body = assert_problem(await client.get("/readyz"), 503, "encoder not ready")
        assert "encoder.internal" not in json.dumps(body) and "loading" not in json.dumps(body)
        assert body["upstreams"] == {"encoder": "not ready", "classifier": "ready"}
        detailed = await client.get("/readyz", headers={"Authorization": f"Bearer {KEYS[1]}"})
        assert_problem(detailed, 503, "encoder http://encoder.internal:8001")


async def test_the_classifier_readyz_names_no_model_without_the_internal_token(tmp_path):
    async with classifier_client(tmp_path / "models", internal_token="s3cret-token") as client:
        client.headers["X-Seam-Internal-Token"] = "s3cret-token"
        assert (await fit(client, "secret-project")).status_code == 201
        assert (await client.get("/readyz")).json()["models"] == 1
        del client.headers["X-Seam-Internal-Token"]
        anonymous = await client.get("/readyz")
        assert anonymous.status_code == 200 and anonymous.json() == {"status": "ready"}
        client.headers["X-Seam-Internal-Token"] = "wrong"
        assert (await client.get("/readyz")).json() == {"status": "ready"}


async def test_the_encoder_readyz_names_no_model_without_the_internal_token(tiny_bert):
    async with encoder_client(model=str(tiny_bert), internal_token="s3cret-token") as client:
        assert (await client.get("/readyz")).json() == {"status": "ready"}
        detailed = (await client.get("/readyz", headers={"X-Seam-Internal-Token": "s3cret-token"})).json()
        assert detailed["status"] == "ready" and "embedding" in detailed["outputs"]


# --- the internal token ----------------------------------------------------------------------------------


async def test_the_encoder_refuses_callers_without_the_internal_token(tiny_bert):
    async with encoder_client(model=str(tiny_bert), internal_token="s3cret-token") as client:
        body = {"texts": ["hello"]}
        response = await client.post("/v1/encode", json=body)
        assert_problem(response, 401, "X-Seam-Internal-Token")
        assert_problem(await client.get("/v1/outputs", headers={"X-Seam-Internal-Token": "nope"}), 403, "not this service's")
        assert (await client.post("/v1/encode", json=body, headers={"X-Seam-Internal-Token": "s3cret-token"})).status_code == 200
        for probe in ("/healthz", "/readyz"):
            assert (await client.get(probe)).status_code == 200


async def test_the_classifier_refuses_callers_without_the_internal_token(tmp_path):
    async with classifier_client(tmp_path / "models", internal_token="s3cret-token") as client:
        assert_problem(await fit(client, "m"), 401, "X-Seam-Internal-Token")
        client.headers["X-Seam-Internal-Token"] = "wrong"
        assert_problem(await fit(client, "m"), 403, "GATEWAY_INTERNAL_TOKEN")
        client.headers["X-Seam-Internal-Token"] = "s3cret-token"
        assert (await fit(client, "m")).status_code == 201


# --- safe model formats ----------------------------------------------------------------------------------


def _pickled_copy(model: Path, target: Path) -> Path:
    """The same BERT with its weights as pytorch_model.bin (a pickle) instead of safetensors."""
    import torch
    from safetensors.torch import load_file

    shutil.copytree(model, target)
    torch.save(load_file(target / "model.safetensors"), target / "pytorch_model.bin")
    (target / "model.safetensors").unlink()
    return target


def test_the_encoder_loads_safetensors_only(tiny_bert, tmp_path):
    folder = _pickled_copy(tiny_bert, tmp_path / "pickled")
    with pytest.raises(ModelLoadError, match=r"pytorch_model\.bin .* pickle-based .* only from safetensors"):
        EncoderRuntime(EncoderSettings(model=str(folder))).load()
    (tmp_path / "empty").mkdir()
    with pytest.raises(ModelLoadError, match="no .*safetensors"):
        EncoderRuntime(EncoderSettings(model=str(tmp_path / "empty"))).load()


async def test_a_refused_model_is_reported_by_readyz(tiny_bert, tmp_path):
    folder = _pickled_copy(tiny_bert, tmp_path / "pickled")
    async with encoder_client(model=str(folder)) as client:
        response = await client.get("/readyz")
    assert_problem(response, 503, "only from safetensors")


class _Payload:
    """Unpickling this writes a file: proof that a loader executed pickle."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (Path.write_text, (self.marker, "executed"))


async def test_the_classifier_never_unpickles_a_stored_model(tmp_path):
    store, marker = tmp_path / "models", tmp_path / "executed"
    async with classifier_client(store) as client:
        assert (await fit(client, "m")).status_code == 201
        assert (await fit(client, "h", "tokens", estimator="attention_pooling", params={"max_epochs": 2})).status_code == 201
    for folder, artifact in ((store / "m" / "1", "model.skops"), (store / "h" / "1", "head.safetensors")):
        content = pickle.dumps(_Payload(marker))
        (folder / artifact).write_bytes(content)
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest["artifacts"][artifact] = hashlib.sha256(content).hexdigest()  # only the loader can refuse it now
        (folder / "manifest.json").write_text(json.dumps(manifest))
    async with classifier_client(store) as client:
        listing = (await client.get("/v1/models")).json()
    assert listing["models"] == []
    reasons = {s["path"]: s["reason"] for s in listing["skipped"]}
    assert set(reasons) == {"m/1", "h/1"}
    assert "not a readable skops file" in reasons["m/1"]
    assert "could not be loaded" in reasons["h/1"]
    assert not marker.exists()


# --- scoped keys (TOML) ----------------------------------------------------------------------------------

SCOPED = {"reporting": "k-reporting-5b1e0c7d", "trainer": "k-trainer-90ad13f2", "ops": "k-ops-4c2e88b1",
          "limited": "k-limited-e3f07a55"}
SCOPED_TOML = keys_toml(
    reporting={"key": f"sha256:{hashlib.sha256(SCOPED['reporting'].encode()).hexdigest()}", "scopes": ["predict"],
               "pipelines": ["support-*"]},
    trainer={"key": SCOPED["trainer"], "scopes": ["predict", "train"]},
    ops={"key": SCOPED["ops"], "scopes": ["admin"]},
    limited={"key": SCOPED["limited"], "scopes": ["predict"], "rate": 0.5, "burst": 2},
)
PREDICT = {"texts": ["hi"]}
TRAIN = {"texts": ["a", "b"], "labels": ["x", "y"]}


@dataclass(frozen=True)
class AccessCase:
    id: str
    key: str
    method: str
    path: str
    status: int  # what the guard answers; 0: let through (whatever the route then says, never 401/403/429)
    says: str = ""
    body: dict | None = None


# The reliability table's access rows: each scope and pipeline refusal names what the key lacks.
ACCESS_CASES = [
    AccessCase("scope-predict-key-trains", "reporting", "POST", "/v1/pipelines/support-a/train", 403,
               "lacks the 'train' scope", TRAIN),
    AccessCase("scope-predict-key-deletes", "reporting", "DELETE", "/v1/pipelines/support-a", 403,
               "lacks the 'admin' scope"),
    AccessCase("scope-train-key-deletes", "trainer", "DELETE", "/v1/pipelines/support-a", 403, "'admin'"),
    AccessCase("scope-aliases-are-admin", "trainer", "POST", "/v1/pipelines/support-a/aliases", 403, "'admin'", {}),
    AccessCase("scope-refit-is-admin", "trainer", "POST", "/v1/pipelines/support-a/refit", 403, "'admin'", {}),
    AccessCase("scope-admin-key-predicts", "ops", "POST", "/v1/pipelines/support-a/predict", 403,
               "lacks the 'predict' scope", PREDICT),
    AccessCase("pipeline-outside-globs-predict", "reporting", "POST", "/v1/pipelines/billing/predict", 403,
               "may not use the pipeline 'billing'", PREDICT),
    AccessCase("pipeline-outside-globs-read", "reporting", "GET", "/v1/pipelines/billing", 403, "support-*"),
    AccessCase("in-scope-predict", "reporting", "POST", "/v1/pipelines/support-a/predict", 0, "", PREDICT),
    AccessCase("in-scope-read-listing", "reporting", "GET", "/v1/pipelines", 0),
    AccessCase("in-scope-train", "trainer", "POST", "/v1/pipelines/anything/train", 0, "", TRAIN),
    AccessCase("in-scope-admin-delete", "ops", "DELETE", "/v1/pipelines/support-a", 0),
]


@pytest.fixture
def scoped_keys(tmp_path) -> Path:
    path = tmp_path / "keys.toml"
    path.write_text(SCOPED_TOML)
    return path


@pytest.mark.parametrize("case", ACCESS_CASES, ids=[c.id for c in ACCESS_CASES])
async def test_scoped_keys_refuse_what_a_key_lacks(scoped_keys, case: AccessCase, caplog):
    caplog.set_level(logging.INFO, logger="seam.access")
    app = gateway(api_keys_file=scoped_keys)
    response = await call(app, case.method, case.path, key=SCOPED[case.key], json=case.body)
    if case.status:
        problem = assert_problem(response, case.status, case.says)
        assert problem["key"] == case.key
        assert "GATEWAY_API_KEYS_FILE" in problem["detail"]  # where to change it
    else:
        assert response.status_code not in (401, 403, 429), response.text
    assert all(secret not in caplog.text and secret not in response.text for secret in SCOPED.values())


async def test_a_key_over_its_rate_gets_429_with_retry_after_and_others_do_not(scoped_keys):
    app = gateway(api_keys_file=scoped_keys)
    async with app.router.lifespan_context(app):
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw") as client:
            def get(key: str):
                return client.get("/v1/pipelines", headers={"Authorization": f"Bearer {SCOPED[key]}"})

            assert [(await get("limited")).status_code for _ in range(2)] == [200, 200]  # the burst
            over = await get("limited")
            assert_problem(over, 429, "over its rate (0.5 requests/s, burst 2)")
            assert int(over.headers["retry-after"]) in (1, 2)
            assert (await get("trainer")).status_code == 200  # no rate: never limited
            metrics = (await client.get("/metrics")).text
    assert 'seam_api_key_requests_total{key="limited",outcome="allowed"} 2.0' in metrics
    assert 'seam_api_key_requests_total{key="limited",outcome="rate"} 1.0' in metrics
    assert 'seam_api_key_requests_total{key="trainer",outcome="allowed"} 1.0' in metrics
    assert SCOPED["limited"] not in metrics


def test_a_token_bucket_refills_at_its_rate():
    now = [0.0]
    bucket = TokenBucket(rate=2.0, burst=3, clock=lambda: now[0])
    assert [bucket.take() for _ in range(3)] == [0.0, 0.0, 0.0]
    assert bucket.take() == pytest.approx(0.5)
    now[0] = 0.5
    assert bucket.take() == 0.0 and bucket.take() > 0
    now[0] = 100.0
    assert [bucket.take() for _ in range(4)].count(0.0) == 3  # never more than the burst saved up


async def test_admin_actions_and_refusals_are_logged_with_the_key_id(scoped_keys, caplog):
    caplog.set_level(logging.INFO, logger="seam.access")
    app = gateway(api_keys_file=scoped_keys)
    assert (await call(app, "DELETE", "/v1/pipelines/support-a", key=SCOPED["ops"])).status_code == 404
    assert "admin action DELETE /v1/pipelines/support-a by API key 'ops' -> 404" in caplog.text
    await call(app, "DELETE", "/v1/pipelines/support-a", key=SCOPED["reporting"])
    assert "refused DELETE /v1/pipelines/support-a for API key 'reporting': scope" in caplog.text


async def test_admin_delete_through_the_gateway_removes_the_pipeline(scoped_keys):
    classifier = FakeClassifier()
    classifier.add("support-a", TensorContract(kind="embedding", dim=8), {"kind": "encoder", "output": "embedding"},
                   ["x", "y"])
    app = gateway(classifier=classifier, api_keys_file=scoped_keys)
    assert (await call(app, "DELETE", "/v1/pipelines/support-a", key=SCOPED["ops"])).status_code == 204
    assert "support-a" not in classifier.models
    assert_problem(await call(app, "DELETE", "/v1/pipelines/support-a", key=SCOPED["ops"]), 404, "no pipeline")


@pytest.mark.parametrize(("toml", "says"), [
    ("[[keys]]\nid = 'a'\nkey = 'k'\nscopes = ['read']\n", "scopes must be a non-empty list of predict, train, admin"),
    ("[[keys]]\nid = 'a'\nkey = 'sha256:abc'\n", "64 hex digits"),
    ("[[keys]]\nkey = 'k'\n", "needs an id"),
    ("[[keys]]\nid = 'a'\nkey = 'k'\nscope = ['predict']\n", "unknown fields ['scope']"),
    ("[[keys]]\nid = 'a'\nkey = 'k'\nburst = 3\n", "given with a rate"),
    ("[[keys]]\nid = 'a'\nkey = 'k'\nrate = 0\n", "rate must be"),
    ("[[keys]]\nid = 'a'\nkey = 'k1'\n[[keys]]\nid = 'a'\nkey = 'k2'\n", "share the id"),
    ("[[keys]\nid = 'a'\n", "not valid TOML"),
])
def test_a_bad_toml_keys_file_is_refused_at_start_naming_the_field(tmp_path, toml, says):
    path = tmp_path / "keys.toml"
    path.write_text(toml)
    with pytest.raises(ApiKeysError, match="GATEWAY_API_KEYS_FILE") as refused:
        gateway(api_keys_file=path)
    assert says in str(refused.value)


async def test_reload_swaps_keys_and_a_broken_file_keeps_the_previous_ones(scoped_keys, caplog):
    app = gateway(api_keys_file=scoped_keys)
    keys = app.state.api_keys
    scoped_keys.write_text('[[keys]]\nid = "new"\nkey = "k-new-0f0f0f0f"\nscopes = ["predict"]\n')
    assert keys.reload()
    assert (await call(app, "GET", "/v1/pipelines", key="k-new-0f0f0f0f")).status_code == 200
    assert (await call(app, "GET", "/v1/pipelines", key=SCOPED["trainer"])).status_code == 403
    scoped_keys.write_text('[[keys]]\nid = "new"\nkey = \n')
    caplog.set_level(logging.ERROR, logger="seam.access")
    assert not keys.reload()
    assert "not reloaded, the previous 1 keys stay in force" in caplog.text and "not valid TOML" in caplog.text
    assert (await call(app, "GET", "/v1/pipelines", key="k-new-0f0f0f0f")).status_code == 200
