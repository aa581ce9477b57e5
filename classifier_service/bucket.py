"""The S3 bucket under the object store (``CLASSIFIER_STORE=s3://bucket/prefix``): its calls and what
their errors mean, listings, and compare-and-swap of small JSON objects, on which version counters
(:mod:`classifier_service.object_store`) and aliases (:class:`ObjectAliasStore`) are built.

The client is boto3: the reference S3 client, whose ``put_object`` takes ``IfNoneMatch`` and
``IfMatch``, and which reads ``AWS_ENDPOINT_URL`` and the credentials from the standard variables.
A store that does not answer is :class:`~services.errors.StoreUnreachable` (503).
"""

from __future__ import annotations

import json
import random
import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from classifier_service.aliases import ALIASES_DIR, Aliases, parse_aliases
from services.contracts import is_valid_model_name
from services.errors import InvalidInput, StoreUnavailable, StoreUnreachable

_CAS_ATTEMPTS = 200


class PreconditionFailed(Exception):
    """A conditional write lost (the object exists, or changed since it was read)."""


class Bucket:
    """Objects under ``prefix`` in one bucket, through ``client``."""

    def __init__(self, url: str, client: Any) -> None:
        bucket, _, prefix = url.removeprefix("s3://").partition("/")
        self.location = url
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.client = client

    def _key(self, *parts: str) -> str:
        return self.prefix + "/".join(parts)

    def _call(self, action: str, method: str, **kwargs: Any) -> Any:
        """One client call; a lost condition is PreconditionFailed, an unreachable store 503."""
        try:
            return getattr(self.client, method)(Bucket=self.bucket, **kwargs)
        except ClientError as exc:
            error = exc.response.get("Error", {})
            status = exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0)
            code = str(error.get("Code", status))
            if status == 412 or code in ("PreconditionFailed", "ConditionalRequestConflict"):
                raise PreconditionFailed(code) from exc
            if code in ("NoSuchKey", "404") or (status == 404 and code != "NoSuchBucket"):
                raise FileNotFoundError(kwargs.get("Key", "")) from exc
            if code in ("AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "403"):
                why = (f"it refuses the service's credentials ({code}); check AWS_ACCESS_KEY_ID and "
                       "AWS_SECRET_ACCESS_KEY")
            elif code == "NoSuchBucket":
                why = f"the bucket {self.bucket!r} does not exist; create it, or fix CLASSIFIER_STORE"
            elif code in ("EntityTooLarge", "QuotaExceeded", "XMinioStorageFull") or status == 507:
                raise StoreUnavailable(
                    f"Could not {action}: the object store {self.location!r} (CLASSIFIER_STORE) is full ({code}). "
                    "Nothing stored was changed. Free space, then retry.", store=self.location) from exc
            else:
                why = f"it answered {status} {code}: {error.get('Message', '')}".rstrip(": ")
            raise self._unreachable(action, why) from exc
        except BotoCoreError as exc:
            raise self._unreachable(action, f"{type(exc).__name__}: {exc}") from exc

    def _unreachable(self, action: str, why: str) -> StoreUnreachable:
        endpoint = getattr(getattr(self.client, "meta", None), "endpoint_url", None) or "AWS_ENDPOINT_URL"
        return StoreUnreachable(
            f"Could not {action}: the model store {self.location!r} (CLASSIFIER_STORE) at {endpoint} is "
            f"unreachable: {why}. Retry when it is back; nothing stored was changed by this request.",
            store=self.location,
        )

    def _list(self, action: str, prefix: str, delimiter: str | None = None) -> tuple[list[dict], list[str]]:
        objects, prefixes, token = [], [], None
        while True:
            kwargs: dict[str, Any] = {"Prefix": prefix}
            if delimiter:
                kwargs["Delimiter"] = delimiter
            if token:
                kwargs["ContinuationToken"] = token
            page = self._call(action, "list_objects_v2", **kwargs)
            objects += page.get("Contents", [])
            prefixes += [p["Prefix"] for p in page.get("CommonPrefixes", [])]
            if not page.get("IsTruncated"):
                return objects, prefixes
            token = page.get("NextContinuationToken")

    def _check(self, name: str) -> str:
        if not is_valid_model_name(name):  # never build a key from an unchecked name
            raise InvalidInput(f"invalid model name {name!r}", name=name)
        return name

    def read_json(self, action: str, key: str) -> tuple[Any, str | None]:
        """A small JSON object and its ETag; (None, None) when absent."""
        try:
            answer = self._call(action, "get_object", Key=key)
        except FileNotFoundError:
            return None, None
        return json.loads(answer["Body"].read()), answer["ETag"]

    def swap_json(self, action: str, key: str, change: Callable[[Any], Any]) -> Any:
        """Compare-and-swap of a small JSON object (``If-Match`` its ETag, ``If-None-Match: *`` when absent),
        retried with a short random pause while others win; ``change`` may raise to refuse."""
        for _ in range(_CAS_ATTEMPTS):
            current, etag = self.read_json(action, key)
            new = change(current)
            condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
            try:
                self._call(action, "put_object", Key=key, Body=json.dumps(new).encode(),
                           ContentType="application/json", **condition)
                return new
            except PreconditionFailed:
                time.sleep(random.uniform(0.001, 0.02))
        raise self._unreachable(action, f"{_CAS_ATTEMPTS} compare-and-swaps in a row were lost to other writers")


class ObjectAliasStore(Aliases):
    """Aliases in the bucket, one small JSON object per model under ``<prefix>.aliases/``, each move one
    compare-and-swap on its ETag: every replica sharing the bucket sees a move at once."""

    def __init__(self, store: Bucket) -> None:
        self.store = store

    def _key(self, name: str) -> str:
        return self.store._key(ALIASES_DIR, self.store._check(name) + ".json")

    def get(self, name: str) -> dict[str, int]:
        return parse_aliases(self.store.read_json(f"read the aliases of {name!r}", self._key(name))[0])

    def _update(self, name: str, change: Callable[[dict[str, int]], dict[str, int]]) -> dict[str, int]:
        return self.store.swap_json(f"move an alias of {name!r}", self._key(name),
                                    lambda raw: change(parse_aliases(raw)))
