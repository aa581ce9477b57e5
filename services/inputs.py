"""Strings from callers that must survive being re-encoded: texts, labels, recorded metadata.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``): Python parses it into a ``str`` that cannot be
encoded as UTF-8, so a tokenizer, a hash or a JSON response built from it fails later with a 500.
These types refuse such input at the door, with a 422 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr

from services.errors import InvalidInput, PayloadTooLarge


def encodable(value: str) -> str:
    """``value`` itself, or ValueError when it holds a lone surrogate (not valid Unicode text)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise ValueError(
            f"not valid Unicode: a lone surrogate {value[exc.start]!r} at character {exc.start}"
        ) from None
    return value


def encodable_json(value: Any) -> Any:
    """``value`` itself, or ValueError when some string inside it is not valid Unicode."""
    try:
        json.dumps(value, ensure_ascii=False).encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode: it holds a lone surrogate") from None
    except (TypeError, ValueError):
        pass  # other problems are the field type's to report
    return value


Text = Annotated[StrictStr, AfterValidator(encodable)]
"""A caller's string (a text to encode, a label): strict, valid Unicode."""


def check_texts(texts: list[str], *, max_texts: int, setting: str, max_chars: int | None = None,
                chars_setting: str = "") -> None:
    """The limits every service puts on a list of texts: how many (413), none blank (422), and, where
    given, how long each may be (413). ``setting``/``chars_setting`` name the variables to raise."""
    if len(texts) > max_texts:
        raise PayloadTooLarge(
            f"{len(texts)} texts in one request; the limit is {max_texts} ({setting}): split the request", limit=max_texts
        )
    for i, text in enumerate(texts):
        if not text.strip():
            raise InvalidInput(f"texts[{i}] is empty; every text needs at least one non-space character", index=i)
        if max_chars is not None and len(text) > max_chars:
            raise PayloadTooLarge(
                f"texts[{i}] has {len(text)} characters; the limit is {max_chars} ({chars_setting})",
                index=i,
                limit=max_chars,
            )
