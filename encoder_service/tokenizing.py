"""Texts to token ids, before padding: what the batcher queues. Truncated to the model window (and
said so per text); a text the model would read as nothing is refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from services.errors import InvalidInput

# Characters handed to the tokenizer at once (see tokenize): bounds its memory.
TOKENIZE_GROUP_CHARS = 100_000


@dataclass(frozen=True)
class TokenizedText:
    """One text after tokenization, before padding: what the batcher queues."""

    input_ids: list[int]
    token_type_ids: list[int] | None
    truncated: bool

    @property
    def n_tokens(self) -> int:
        return len(self.input_ids)



def tokenize(tokenizer: Any, texts: list[str], max_tokens: int) -> list[TokenizedText]:
    """Token ids per text, truncated to ``max_tokens``; ``truncated`` says where that happened.
    Texts go to the tokenizer in groups of at most :data:`TOKENIZE_GROUP_CHARS` characters: it
    tokenizes each text whole before cutting it, so many long texts at once would hold pieces the model
    never reads; a group's pieces are dropped before the next."""
    items: list[TokenizedText] = []
    start = 0
    while start < len(texts):
        end, chars = start + 1, len(texts[start])
        while end < len(texts) and chars + len(texts[end]) <= TOKENIZE_GROUP_CHARS:
            chars += len(texts[end])
            end += 1
        try:
            items += _tokenize_group(tokenizer, texts[start:end], max_tokens)
        except InvalidInput as exc:
            index = exc.extra["index"] + start
            raise InvalidInput(exc.detail.replace(f"texts[{exc.extra['index']}]", f"texts[{index}]", 1), index=index) from None
        start = end
    return items


def _tokenize_group(tokenizer: Any, texts: list[str], max_tokens: int) -> list[TokenizedText]:
    enc = tokenizer(
        texts, truncation=True, max_length=max_tokens, return_overflowing_tokens=True, stride=0
    )
    _refuse_empty(texts, enc["input_ids"], enc["overflow_to_sample_mapping"], tokenizer)
    mapping = enc["overflow_to_sample_mapping"]
    type_ids = enc.get("token_type_ids")
    first: dict[int, int] = {}
    pieces = [0] * len(texts)
    for row, sample in enumerate(mapping):
        first.setdefault(sample, row)
        pieces[sample] += 1
    return [
        TokenizedText(
            input_ids=enc["input_ids"][first[i]],
            token_type_ids=type_ids[first[i]] if type_ids is not None else None,
            truncated=pieces[i] > 1,
        )
        for i in range(len(texts))
    ]


def _refuse_empty(texts: list[str], ids: list[list[int]], mapping: list[int], tokenizer: Any) -> None:
    """A text whose tokens are all special ([CLS], [SEP], padding) gives the model nothing to read:
    refused like a blank text (an unknown token, [UNK], still stands for something)."""
    special = set(tokenizer.all_special_ids) - {tokenizer.unk_token_id}
    seen = set()
    for row, sample in enumerate(mapping):
        if sample not in seen:
            seen.add(sample)
            if all(token in special for token in ids[row]):
                raise InvalidInput(
                    f"texts[{sample}] is empty to the model: it tokenizes to special tokens only (its characters "
                    "are ones the tokenizer drops); every text needs a letter, number, symbol or punctuation",
                    index=sample,
                )
