"""Aliases in the classifier's store: atomic per-model files, compare-and-swap, deleted with the model."""

from __future__ import annotations

import json
import threading

import pytest

from classifier_service.aliases import ALIASES_DIR, AliasMoved, AliasNotFound, AliasStore
from services.errors import InvalidInput
from tests.classifier_service.synthetic import classifier_client, fit


def test_set_get_delete_and_compare_and_swap(tmp_path):
    store = AliasStore(tmp_path)
    assert store.get("intents") == {}
    assert store.set("intents", "production", 1) == {"production": 1}
    assert store.set("intents", "canary", 2, expected=0) == {"canary": 2, "production": 1}
    with pytest.raises(AliasMoved) as moved:
        store.set("intents", "production", 3, expected=2)  # it points at 1
    assert "points at 1" in moved.value.detail
    assert store.set("intents", "production", 3, expected=1)["production"] == 3
    assert AliasStore(tmp_path).get("intents") == {"canary": 2, "production": 3}  # another process sees it
    assert store.delete("intents", "canary") == {"production": 3}
    with pytest.raises(AliasNotFound):
        store.delete("intents", "canary")
    # One file per model, written by rename: no temporary file is left behind.
    assert sorted(p.name for p in (tmp_path / ALIASES_DIR).iterdir()) == [".lock", "intents.json"]
    assert json.loads((tmp_path / ALIASES_DIR / "intents.json").read_text()) == {"production": 3}
    store.drop("intents")
    assert store.get("intents") == {} and not (tmp_path / ALIASES_DIR / "intents.json").exists()


@pytest.mark.parametrize("alias", ["Production", "a b", "", "x" * 65, "../etc"])
def test_alias_names_are_checked(tmp_path, alias):
    with pytest.raises(InvalidInput) as refused:
        AliasStore(tmp_path).set("intents", alias, 1)
    assert "alias name" in refused.value.detail


def test_concurrent_moves_lose_none(tmp_path):
    """Read-modify-write under the lock: 8 threads each setting their own alias, all kept."""
    stores = [AliasStore(tmp_path) for _ in range(8)]
    threads = [threading.Thread(target=lambda i=i: [stores[i].set("m", f"a{i}", n + 1) for n in range(20)])
               for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert AliasStore(tmp_path).get("m") == {f"a{i}": 20 for i in range(8)}


async def test_routes_move_aliases_of_existing_versions_only(store):
    async with classifier_client(store) as client:
        assert (await client.get("/v1/models/m/aliases")).json()["aliases"] == {}
        assert (await fit(client, "m")).status_code == 201
        moved = await client.put("/v1/models/m/aliases/production", json={"version": 1})
        assert moved.status_code == 200 and moved.json()["aliases"] == {"production": 1}
        assert (await client.get("/v1/models/m/latest")).json()["aliases"] == {"production": 1}  # what gateways read
        missing = await client.put("/v1/models/m/aliases/production", json={"version": 7})
        assert missing.status_code == 404 and "no version 7" in missing.json()["detail"]
        lost = await client.put("/v1/models/m/aliases/production", json={"version": 1, "expected": 2})
        assert lost.status_code == 409 and lost.json()["type"].endswith("/alias-moved")
        bad = await client.put("/v1/models/m/aliases/BAD", json={"version": 1})
        assert bad.status_code == 422
        assert (await client.delete("/v1/models/m/aliases/canary")).status_code == 404
        # The store's bookkeeping is never read as a model; deleting the model deletes its aliases.
        listing = (await client.get("/v1/models")).json()
        assert [m["name"] for m in listing["models"]] == ["m"] and listing["skipped"] == []
        assert (await client.delete("/v1/models/m")).status_code == 204
        assert (await client.get("/v1/models/m/aliases")).json()["aliases"] == {}
