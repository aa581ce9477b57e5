"""The upgrade path with real processes: two encoders on tiny models of different widths behind two gateways
sharing one classifier.

A pipeline and a chain fitted on the first encoder; ``seam migrate`` onto the second (the table, bottom-up,
the shared base refitted once); old versions still served by the first encoder (``?version=``), new ones by
the second; compare with labels; promote and roll back, seen by both gateways; a version trained with
``retain_texts: false`` refused for refit with the reason; the classifier SIGKILLed during a refit loses
nothing and leaves no half version.
"""

from __future__ import annotations

import csv
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from seam import cli
from tests.processes import PROBE, ServiceProcess, all_running, encoder, gateway, predict, train
from tests.support import sample

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=300) as client:
        yield client


@pytest.fixture(scope="module")
def stack(tmp_path_factory, tiny_bert, tiny_bert_wide) -> Iterator[dict[str, ServiceProcess]]:
    var = tmp_path_factory.mktemp("upgrade")
    classifier = ServiceProcess("classifier_service", {"CLASSIFIER_STORE": str(var / "models")}, log=var / "classifier.log")
    small, wide = encoder(tiny_bert, var, "small"), encoder(tiny_bert_wide, var, "wide")
    encoders = {"small": small, "wide": wide}
    # One gateway caches aliases for a second: the other one's moves reach it within that.
    services = {"classifier": classifier, "small": small, "wide": wide,
                "gw1": gateway(var, "gw1", classifier, encoders),
                "gw2": gateway(var, "gw2", classifier, encoders, GATEWAY_PIPELINE_TTL_S="1")}
    with all_running(*services.values()):
        services["var"] = var  # type: ignore[assignment]
        yield services


def labels_of(response: httpx.Response) -> list[str]:
    assert response.status_code == 200, response.text
    return [p["label"] for p in response.json()["predictions"]]


def test_migrate_compare_promote_and_roll_back(http, stack, capsys, tmp_path):
    gw1, gw2 = stack["gw1"], stack["gw2"]
    assert train(http, gw1, "intents").status_code == 201  # on small, the first encoder
    chained = train(http, gw1, "urgency", feature="pipeline:intents")
    assert chained.status_code == 201, chained.text
    assert chained.json()["source"] == {"type": "pipeline", "name": "intents", "version": 1}

    assert cli.main(["--gateway", gw1.url, "migrate", "--from", "small", "--to", "wide"]) == 0
    out = capsys.readouterr()
    lines = out.out.splitlines()
    assert lines[0].split() == ["pipeline", "old", "new", "old", "acc", "new", "acc", "agreement", "production"]
    rows = {line.split()[0]: line.split() for line in lines[2:4]}
    assert rows["intents"][1:5] == ["v1", "(small)", "v2", "(wide)"]
    assert rows["urgency"][1:5] == ["v1", "(small)", "v2", "(wide)"]
    for row in rows.values():
        old_acc, new_acc, agreement = (float(x) for x in row[5:8])
        assert 0 <= old_acc <= 1 and 0 <= new_acc <= 1 and 0 <= agreement <= 1
    assert "2/2" in out.err  # the bar, over the two pipelines
    assert "production still serves the old versions" in out.out

    # Refit from the bottom: the new consumer is fitted on the new base; intents refitted once.
    versions = http.get(f"{stack['classifier'].url}/v1/models/intents").json()["versions"]
    assert [v["version"] for v in versions] == [1, 2]
    new_chain = http.get(f"{gw1.url}/v1/pipelines/urgency").json()
    assert new_chain["version"] == 1 and new_chain["aliases"] == {"production": 1}  # nothing promoted: pinned
    v2 = http.get(f"{stack['classifier'].url}/v1/models/urgency/versions/2").json()
    assert v2["source"] == {"type": "pipeline", "name": "intents", "version": 2}
    assert v2["retained"]["texts"] == 300 and v2["estimator"] == "logistic_regression"

    # Old versions on the first encoder, new ones on the second, side by side.
    for name in ("intents", "urgency"):
        for version, expected in ((1, "small"), (2, "wide")):
            assert predict(http, gw1, name, version).status_code == 200
            report = http.get(f"{gw1.url}/v1/pipelines/{name}").json() if version == 1 else None
            if report:
                assert report["chain"][0]["encoder"] == "small"
    assert predict(http, gw1, "intents").json()["version"] == 1  # production, pinned by the refit

    # Compare with labels, through the CLI and the API.
    texts, labels = sample()
    compared = http.post(f"{gw1.url}/v1/pipelines/intents/compare",
                         json={"texts": texts[:40], "labels": labels[:40], "a": 1, "b": 2})
    assert compared.status_code == 200, compared.text
    body = compared.json()
    assert (body["a"]["version"], body["a"]["encoder"], body["b"]["version"], body["b"]["encoder"]) == (1, "small", 2, "wide")
    assert len(body["predictions"]) == 40 and 0 <= body["agreement"] <= 1
    for side in ("a", "b"):
        assert 0 <= body[side]["accuracy"] <= 1 and 0 <= body[side]["macro_f1"] <= 1
    agree = sum(p["agree"] for p in body["predictions"]) / 40
    assert abs(agree - body["agreement"]) < 1e-6
    csv_file = tmp_path / "eval.csv"
    with csv_file.open("w", newline="") as f:
        csv.writer(f).writerows([("text", "label"), *zip(texts[:20], labels[:20])])
    assert cli.main(["--gateway", gw1.url, "compare", "intents", "production", "2", str(csv_file)]) == 0
    assert "macro-F1" in capsys.readouterr().out

    # Promote through one gateway: both serve v2 (the other within its 1 s alias cache); roll back the same way.
    assert cli.main(["--gateway", gw1.url, "promote", "intents", "2"]) == 0
    assert "production -> v2" in capsys.readouterr().out
    time.sleep(1.2)
    for gw in (gw1, gw2):
        assert predict(http, gw, "intents").json()["version"] == 2
        assert http.post(f"{gw.url}/v1/pipelines/intents/predict", params={"alias": "production"},
                         json={"texts": PROBE}).json()["version"] == 2
    assert http.get(f"{gw2.url}/v1/pipelines/intents").json()["chain"][0]["encoder"] == "wide"
    rolled = http.put(f"{gw2.url}/v1/pipelines/intents/aliases/production", json={"version": 1})
    assert rolled.status_code == 200 and rolled.json()["aliases"] == {"production": 1}
    time.sleep(1.2)
    for gw in (gw1, gw2):
        assert predict(http, gw, "intents").json()["version"] == 1
    assert cli.main(["--gateway", gw1.url, "aliases", "intents"]) == 0
    assert "production  v1" in capsys.readouterr().out

    # A version that no registered encoder serves cannot take an alias: 409 with every encoder's mismatches.
    rogue = http.post(f"{stack['classifier'].url}/v1/models/intents/fit", json={
        "features": [[0.1, 0.2], [0.3, 0.1], [0.2, 0.2], [0.0, 0.4]], "labels": ["a", "b", "a", "b"],
        "contract": {"kind": "embedding", "dim": 2, "dtype": "float32"},
        "estimator": "logistic_regression", "source": {"type": "encoder", "output": "embedding", "encoder": "small"}})
    assert rogue.status_code == 201, rogue.text
    refused = http.put(f"{gw1.url}/v1/pipelines/intents/aliases/canary", json={"version": rogue.json()["version"]})
    assert refused.status_code == 409, refused.text
    producers = {m["producer"].split(" model ")[0] for m in refused.json()["mismatches"]}
    assert producers == {f"encoder small {stack['small'].url}", f"encoder wide {stack['wide'].url}"}
    assert http.get(f"{gw1.url}/v1/pipelines/intents/aliases").json()["aliases"] == {"production": 1}
    bad = http.put(f"{gw1.url}/v1/pipelines/intents/aliases/Not%20Valid", json={"version": 1})
    assert bad.status_code == 422 and "alias name" in bad.json()["detail"]
    assert http.delete(f"{gw1.url}/v1/pipelines/intents/aliases/canary").status_code == 404
    unknown = http.post(f"{gw1.url}/v1/pipelines/intents/predict", params={"alias": "canary"}, json={"texts": PROBE})
    assert unknown.status_code == 404 and "production (v1)" in unknown.json()["detail"]


def test_a_version_without_kept_texts_is_refused_for_refit(http, stack):
    gw = stack["gw1"]
    assert train(http, gw, "private", retain_texts=False).status_code == 201
    refused = http.post(f"{gw.url}/v1/pipelines/private/refit", json={"encoder": "wide"})
    assert refused.status_code == 409, refused.text
    assert refused.json()["type"].endswith("/not-refittable")
    assert "retain_texts" in refused.json()["detail"] and "private v1" in refused.json()["detail"]
    assert [v["version"] for v in http.get(f"{stack['classifier'].url}/v1/models/private").json()["versions"]] == [1]
    unknown = http.post(f"{gw.url}/v1/pipelines/private/refit", json={"encoder": "mpnet"})
    assert unknown.status_code == 422 and "small, wide" in unknown.json()["detail"]


def test_sigkill_of_the_classifier_during_a_refit_loses_nothing(http, stack):
    gw, classifier, var = stack["gw1"], stack["classifier"], Path(stack["var"])
    texts, labels = sample()
    many = [f"{t} (case {i})" for i in range(10) for t in texts]  # 3000 texts: the refit takes a while
    body = {"texts": many, "labels": labels * 10, "estimator": "logistic_regression"}
    assert http.post(f"{gw.url}/v1/pipelines/bulk/train", json=body).status_code == 201
    before = http.get(f"{classifier.url}/v1/models/bulk").json()
    folder = var / "models" / "bulk"

    answer: dict[str, httpx.Response | Exception] = {}

    def refit() -> None:
        try:
            answer["r"] = http.post(f"{gw.url}/v1/pipelines/bulk/refit", json={"encoder": "wide", "promote": True})
        except httpx.HTTPError as exc:
            answer["r"] = exc

    thread = threading.Thread(target=refit)
    thread.start()
    deadline = time.monotonic() + 60
    # Killed while the new version is being written, or as close to it as polling gets.
    while time.monotonic() < deadline and not any(p.name.startswith(".tmp-") for p in folder.iterdir()):
        if not thread.is_alive():
            break
        time.sleep(0.005)
    classifier.stop(kill=True)
    thread.join(120)
    assert isinstance(answer["r"], httpx.Response) and answer["r"].status_code in (502, 503, 504), answer["r"]

    classifier.start()
    after = http.get(f"{classifier.url}/v1/models/bulk").json()
    assert after["versions"][0] == before["versions"][0]  # v1 untouched
    assert [v["version"] for v in after["versions"]] in ([1], [1, 2])  # a version is whole, or absent
    ready = http.get(f"{classifier.url}/readyz").json()
    assert not ready.get("skipped"), ready  # nothing half-written was found
    aliases = http.get(f"{gw.url}/v1/pipelines/bulk/aliases").json()["aliases"]
    assert aliases == {"production": 1}  # pinned before the fit; never promoted: the refit failed
    assert predict(http, gw, "bulk").json()["version"] == 1
    for version in [v["version"] for v in after["versions"]]:
        assert predict(http, gw, "bulk", version).status_code == 200
    # The kept texts survived too: the refit can simply be run again.
    again = http.post(f"{gw.url}/v1/pipelines/bulk/refit", json={"encoder": "wide", "version": 1})
    assert again.status_code == 201, again.text
    assert again.json()["pipelines"][0]["old_version"] == 1 and again.json()["promoted"] is False
