"""Tokenised data, cached on disk by ``datasets`` fingerprints.

:func:`encode_examples` tokenises examples into an Arrow file keyed by a fingerprint of the
data, the tokenizer and the sequence length, so other worker processes re-use it.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.worker._example import GlueExample

if TYPE_CHECKING:
    import datasets

#: Environment variable naming archsearch's cache folder (tokenised data goes in ``tokenized/``).
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
# Bump when the encoding below changes, so old cache files are no longer matched.
_ENCODING_VERSION = 1


def default_cache_dir() -> Path:
    """``$ARCHSEARCH_CACHE_DIR/tokenized``, else ``~/.cache/archsearch/tokenized``."""
    root = os.environ.get(CACHE_DIR_ENV)
    base = Path(root).expanduser() if root else Path.home() / ".cache" / "archsearch"
    return base / "tokenized"


def examples_hash(examples: Sequence[GlueExample]) -> str:
    """sha256 (hex) of the examples' texts and labels, in order: the data's provenance hash."""
    digest = hashlib.sha256()
    for example in examples:
        record = json.dumps([list(example.texts), example.label], ensure_ascii=False)
        digest.update(record.encode())
        digest.update(b"\n")
    return digest.hexdigest()


@dataclasses.dataclass(frozen=True)
class EncodedExamples:
    """Tokenised examples (see :func:`encode_examples`).

    Attributes:
        dataset: A ``datasets.Dataset`` with columns ``label`` (int64 class or float32 score),
            ``input_ids`` (int32 lists) and ``token_type_ids`` (int8 lists), unpadded, in the
            examples' order; memory-mapped from ``cache_file`` when there is one.
        data_hash: :func:`examples_hash` of the examples (for provenance).
        fingerprint: The ``datasets`` fingerprint (data hash, tokenizer, length, version).
        cache_file: The Arrow file holding ``dataset``; None for an empty example list.
        from_cache: Whether the file existed already, so nothing was tokenised.
    """

    dataset: datasets.Dataset
    data_hash: str
    fingerprint: str
    cache_file: Path | None
    from_cache: bool

    def __len__(self) -> int:
        return len(self.dataset)

    def arrays(self) -> dict[str, np.ndarray]:
        """Flat numpy arrays: ``input_ids`` and ``token_type_ids`` concatenated, ``offsets``
        (example ``i`` spans ``offsets[i]:offsets[i + 1]``, length n + 1), and ``labels``."""
        table = self.dataset.data.table
        out: dict[str, np.ndarray] = {}
        offsets = np.zeros(1, dtype=np.int64)
        for name, dtype in (("input_ids", np.int32), ("token_type_ids", np.int8)):
            column = table.column(name).combine_chunks()
            if len(column) == 0:
                out[name] = np.empty(0, dtype)
                continue
            out[name] = column.flatten().to_numpy(zero_copy_only=False).astype(dtype, copy=False)
            raw = column.offsets.to_numpy().astype(np.int64)
            offsets = raw - raw[0]
        out["offsets"] = offsets
        labels = table.column("label").to_numpy()
        out["labels"] = labels.astype(np.float32 if labels.dtype.kind == "f" else np.int64)
        return out


def encode_examples(
    examples: Sequence[GlueExample],
    tokenizer: Any,
    max_seq_length: int,
    cache_dir: str | Path | None = None,
    *,
    is_regression: bool | None = None,
) -> EncodedExamples:
    """Tokenises examples once per machine: later calls, in any process, read the Arrow file.

    The examples become a ``datasets.Dataset`` tokenised with ``.map(batched=True)`` under an
    explicit ``new_fingerprint`` and ``cache_file_name`` derived from: the sha256 of the
    examples' texts and labels, the tokenizer's ``name_or_path``, class and vocabulary size
    (``len(tokenizer)``), ``max_seq_length`` and an encoding version. ``datasets`` writes the
    file atomically (a temporary file, then a rename), so concurrent workers are safe.

    Texts are truncated to ``max_seq_length`` tokens (pairs: longest first) and not padded;
    tokenizers without ``token_type_ids`` get zeros.

    Args:
        examples: The examples; all single sentences or all pairs.
        tokenizer: A Hugging Face tokenizer (callable on text lists, with ``name_or_path``).
        max_seq_length: Truncation length in tokens.
        cache_dir: Folder for the Arrow files; default :func:`default_cache_dir`.
        is_regression: Whether labels are scores; default: whether any label is a float.

    Returns:
        The :class:`EncodedExamples`.

    Raises:
        ValueError: Mixed single sentences and pairs, or ``max_seq_length`` < 2.
    """
    import datasets

    if max_seq_length < 2:
        raise ValueError(f"max_seq_length must be >= 2, got {max_seq_length}")
    widths = {len(e.texts) for e in examples}
    if len(widths) > 1:
        raise ValueError(f"examples mix {sorted(widths)} texts each; all must have the same")
    if is_regression is None:
        is_regression = any(isinstance(e.label, float) for e in examples)
    data_hash = examples_hash(examples)
    fingerprint = hashlib.sha256(
        json.dumps(
            {
                "version": _ENCODING_VERSION,
                "data": data_hash,
                "tokenizer": str(getattr(tokenizer, "name_or_path", "")),
                "tokenizer_class": type(tokenizer).__name__,
                "vocab_size": _vocab_size(tokenizer),
                "max_seq_length": max_seq_length,
                "regression": is_regression,
            },
            sort_keys=True,
        ).encode()
    ).hexdigest()
    label_type = datasets.Value("float32" if is_regression else "int64")
    features = datasets.Features(
        {
            "label": label_type,
            "input_ids": datasets.List(datasets.Value("int32")),
            "token_type_ids": datasets.List(datasets.Value("int8")),
        }
    )
    if not examples:
        empty = datasets.Dataset.from_dict({k: [] for k in features}, features=features)
        return EncodedExamples(empty, data_hash, fingerprint, None, False)

    folder = Path(cache_dir).expanduser() if cache_dir is not None else default_cache_dir()
    folder.mkdir(parents=True, exist_ok=True)
    cache_file = folder / f"{fingerprint}.arrow"
    from_cache = cache_file.is_file()
    width = widths.pop()
    text_columns = [f"text_{i}" for i in range(width)]
    columns: dict[str, list[Any]] = {
        name: [e.texts[i] for e in examples] for i, name in enumerate(text_columns)
    }
    columns["label"] = [e.label for e in examples]
    input_features = datasets.Features(
        {**{name: datasets.Value("string") for name in text_columns}, "label": label_type}
    )
    raw = datasets.Dataset.from_dict(columns, features=input_features)

    def tokenize(batch: Mapping[str, list[Any]]) -> dict[str, list[list[int]]]:
        second = batch["text_1"] if width > 1 else None
        encoded = tokenizer(
            batch["text_0"],
            second,
            truncation=True,
            max_length=max_seq_length,
            return_attention_mask=False,
        )
        ids = encoded["input_ids"]
        types = encoded.get("token_type_ids") or [[0] * len(row) for row in ids]
        return {"input_ids": ids, "token_type_ids": types}

    dataset = raw.map(
        tokenize,
        batched=True,
        remove_columns=text_columns,
        features=features,
        load_from_cache_file=True,
        cache_file_name=str(cache_file),
        new_fingerprint=fingerprint,
        desc="tokenizing",
    )
    return EncodedExamples(dataset, data_hash, fingerprint, cache_file, from_cache)


def _vocab_size(tokenizer: Any) -> int:
    try:
        return len(tokenizer)
    except TypeError:
        return int(getattr(tokenizer, "vocab_size", 0))
