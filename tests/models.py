"""Tiny transformer model folders made on the fly: the real loading code serves them, in seconds."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import BertConfig, BertForSequenceClassification, BertModel, BertTokenizer

WORDS = (
    "the a an my your is was to of and in for on it this that i you we please where when how what "
    "order parcel package delivery shipping arrived late lost refund charge charged twice invoice bill "
    "billing payment card account password login reset email address change cancel subscription plan "
    "hello thanks help need want can not yesterday today week quick brown fox jumps over lazy dog "
    "quantum chromodynamics describes strong interaction same should have been"
).split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def write_tokenizer(folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(SPECIAL + sorted(set(WORDS))) + "\n")
    BertTokenizer(vocab_file=str(vocab), do_lower_case=True, model_max_length=64).save_pretrained(folder)


def _config(hidden: int, **extra) -> BertConfig:
    return BertConfig(
        vocab_size=len(SPECIAL) + len(set(WORDS)),
        hidden_size=hidden,
        num_hidden_layers=2,
        num_attention_heads=4,
        intermediate_size=hidden * 2,
        max_position_embeddings=64,
        **extra,
    )


def make_bert(folder: Path, *, hidden: int = 32, seed: int = 0) -> Path:
    """A plain BertModel folder (no sentence-transformers config: mean pooling by default)."""
    torch.manual_seed(seed)
    BertModel(_config(hidden)).save_pretrained(folder)
    write_tokenizer(folder)
    return folder


def make_classifier(folder: Path, *, hidden: int = 32, labels: tuple[str, ...] = ("negative", "neutral", "positive"), seed: int = 0) -> Path:
    """A BertForSequenceClassification folder with ``id2label`` in the given order."""
    torch.manual_seed(seed)
    config = _config(
        hidden,
        num_labels=len(labels),
        id2label=dict(enumerate(labels)),
        label2id={label: i for i, label in enumerate(labels)},
    )
    BertForSequenceClassification(config).save_pretrained(folder)
    write_tokenizer(folder)
    return folder
