"""Cheap checks on a raw request body, run once it is in and before anything parses it.

JSON nested thousands deep exhausts the recursion of whatever walks it (``json.loads``, pydantic,
a serialiser): it is refused here, for every service and every route, from the raw bytes. The scan
costs two ``bytes.count`` calls for an ordinary body; only a body with more brackets than the limit
is scanned exactly (strings blanked out by one regular expression, the brackets kept by
``bytes.translate``, their running depth summed by numpy), all at C speed.
"""

from __future__ import annotations

import re
import struct

import numpy as np

from services.codecs import BINARY_CONTENT_TYPE

# A JSON string, escapes included; an unterminated one runs to the end. Possessive: never backtracks.
_STRING = re.compile(rb'"(?:[^"\\]++|\\[\s\S]?+)*+(?:"|\Z)')
_NOT_BRACKETS = bytes(b for b in range(256) if b not in b"[]{}")


def json_depth(raw: bytes | memoryview, limit: int) -> int:
    """How deep ``raw`` nests arrays and objects, when deeper than ``limit``; 0 otherwise (a cheap
    answer for the ordinary body). Brackets inside strings do not count. Not a JSON validator."""
    raw = bytes(raw) if isinstance(raw, memoryview) else raw
    if raw.count(b"[") + raw.count(b"{") <= limit:
        return 0
    bare = _STRING.sub(b"", raw) if b'"' in raw else raw
    brackets = np.frombuffer(bare.translate(None, _NOT_BRACKETS), dtype=np.uint8)
    if len(brackets) <= limit:
        return 0
    # '[' 0x5B and '{' 0x7B have bit 1 set, ']' 0x5D and '}' 0x7D do not: +1 opens, -1 closes.
    steps = (brackets & 2).astype(np.int32) - 1
    deepest = int(np.cumsum(steps).max())
    return deepest if deepest > limit else 0


def json_part(body: bytes, content_type: str, header_length: str | None) -> bytes:
    """The part of a body that is JSON: all of it, the JSON header of a seam tensor frame, or the
    first ``Inference-Header-Content-Length`` bytes of an Open Inference Protocol binary body."""
    if content_type == BINARY_CONTENT_TYPE:
        if len(body) < 8 or body[:4] != b"SEAM":
            return b""  # not a frame: the route says so
        (n,) = struct.unpack_from("<I", body, 4)
        return body[8 : 8 + n]
    if header_length is not None and header_length.strip().isdigit():
        return body[: int(header_length)]
    return body
