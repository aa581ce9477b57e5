"""Strings from callers that must survive being re-encoded: texts, labels, recorded metadata.

JSON may carry a lone UTF-16 surrogate (``"\\ud800"``): Python parses it into a ``str`` that cannot be
encoded as UTF-8, so a tokenizer, a hash or a JSON response built from it fails later with a 500.
These types refuse such input at the door, with a 422 naming the field.
"""

from __future__ import annotations

import json
import re
import sys
import unicodedata
from functools import cache
from typing import Annotated, Any

from pydantic import AfterValidator, StrictStr

from services.contracts import MODEL_NAME_PATTERN, is_valid_model_name
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


# Characters that carry nothing a model can read: control and format characters (NUL, zero-width
# spaces and joiners, bidi marks, the BOM), surrogates, separators (spaces) and combining marks.
# Tokenizers drop or merge them: a text of these alone tokenizes to the special tokens only.
NO_CONTENT_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zs", "Zl", "Zp", "Mn", "Mc", "Me"})


def _ranges(low: int, high: int) -> str:
    """A regex character class's body: the code points in [low, high] of :data:`NO_CONTENT_CATEGORIES`."""
    ranges: list[str] = []
    start = None
    for code in range(low, high + 2):
        inside = code <= high and unicodedata.category(chr(code)) in NO_CONTENT_CATEGORIES
        if inside and start is None:
            start = code
        elif not inside and start is not None:
            ranges.append(re.escape(chr(start)) + ("-" + re.escape(chr(code - 1)) if code - 1 > start else ""))
            start = None
    return "".join(ranges)


@cache
def _no_content() -> re.Pattern[str]:
    """A text made only of characters of :data:`NO_CONTENT_CATEGORIES` (built once, on first need:
    a pass over every code point, about a fifth of a second). The basic plane's class and the others'
    are apart: ``re`` tests the first against a bitmap, 20,000 characters in about 60 microseconds."""
    bmp, astral = _ranges(0, 0xFFFF), _ranges(0x10000, sys.maxunicode)
    return re.compile(f"[{bmp}]*+(?:[{astral}][{bmp}]*+)*+")


def has_content(text: str) -> bool:
    """Whether ``text`` holds a letter, number, symbol or punctuation (or a private-use or unassigned
    code point, which a tokenizer reads as unknown rather than nothing)."""
    return _no_content().fullmatch(text) is None  # an ordinary text fails at its first letter


def check_texts(texts: list[str], *, max_texts: int, setting: str, max_chars: int | None = None,
                chars_setting: str = "") -> None:
    """The limits every service puts on a list of texts: how many (413), where given how long each may
    be (413), and none without content (422: blank, or only invisible characters, see :func:`has_content`). ``setting``/``chars_setting`` name the variables to raise."""
    if len(texts) > max_texts:
        raise PayloadTooLarge(
            f"{len(texts)} texts in one request; the limit is {max_texts} ({setting}): split the request", limit=max_texts
        )
    for i, text in enumerate(texts):
        if max_chars is not None and len(text) > max_chars:
            raise PayloadTooLarge(
                f"texts[{i}] has {len(text)} characters; the limit is {max_chars} ({chars_setting})",
                index=i,
                limit=max_chars,
            )
        if not has_content(text):
            raise InvalidInput(
                f"texts[{i}] is empty: it holds no letter, number, symbol or punctuation (only spaces, control or "
                "invisible format characters, or combining marks); every text needs at least one",
                index=i,
            )


def check_labels(labels: list[str], max_chars: int, setting: str = "GATEWAY_MAX_LABEL_CHARS") -> None:
    """Training labels: each at most ``max_chars`` long (413), since every prediction repeats the label of
    every class (256 texts x 20 classes x 100,000 characters took the gateway past 1 GB)."""
    for i, label in enumerate(labels):
        if len(label) > max_chars:
            raise PayloadTooLarge(
                f"labels[{i}] has {len(label)} characters; the limit is {max_chars} ({setting}): use short class names",
                index=i, limit=max_chars,
            )


def check_name(name: str, what: str = "pipeline") -> str:
    """A pipeline or model name as the store writes it; 422 otherwise."""
    if not is_valid_model_name(name):
        raise InvalidInput(
            f"{name!r} is not a valid {what} name: names match {MODEL_NAME_PATTERN} "
            "(lower-case letters, digits, '_' and '-', at most 64)",
            name=name,
        )
    return name


def check_alias(alias: str) -> str:
    """An alias name (``production``): named like pipelines; 422 otherwise."""
    if not is_valid_model_name(alias):
        raise InvalidInput(
            f"{alias!r} is not a valid alias name: aliases match {MODEL_NAME_PATTERN} (lower-case letters, digits, "
            "'_' and '-', at most 64), like pipeline names", alias=alias,
        )
    return alias
