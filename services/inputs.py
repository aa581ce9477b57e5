"""Strings from callers that must survive being re-encoded: texts, labels, recorded metadata.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``): Python parses it into a ``str`` that cannot be
encoded as UTF-8, so a tokenizer, a hash or a JSON response built from it fails later with a 500.
These types refuse such input at the door, with a 422 naming the field.
"""

from __future__ import annotations

import json
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr


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
