"""The on-disk format of a Transformer2vec model: a compressed, versioned ``.npz`` file.

:meth:`Transformer2vec.save <archsearch.surrogates.Transformer2vec.save>` hands a
:class:`SavedModel` snapshot to :func:`write_model`; :meth:`Transformer2vec.load` reads one back
with :func:`read_model`. The file holds no pickled objects: JSON (as UTF-8 bytes) for the
metadata, the key table and the anchor graphs, ``float64`` for vectors and GEDs, ``int32``
indices into the key table for anchors and pairs.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import networkx as nx
import numpy as np

#: Version of the file written by :meth:`Transformer2vec.save`; ``load`` refuses others.
#: Version 2 (issue 11): keys stored once, pairs as indices into them, compressed (version 1
#: stored every pair as two fixed-width strings: 130 MB for a 5,000-row library).
FORMAT_VERSION = 2
_FORMAT_NAME = "archsearch.transformer2vec"

_PairKey = tuple[str, str]


@dataclass
class SavedModel:
    """Everything a Transformer2vec file holds.

    Attributes:
        config: The constructor's keyword arguments.
        scale: Mean GED of the fitted pairs.
        fit_epochs: Epochs of the last fit.
        fit_loss: Final loss of the last fit (NaN when none).
        keys: Embedded keys, in embedding order.
        vectors: Their vectors, ``float64``, shape ``(len(keys), dim)``.
        anchor_graphs: ``{key: graph}`` of the anchors, in order.
        trained_pairs: Sorted key pairs the vectors were fitted to.
        ged_cache: ``{(key_a, key_b) sorted: GED}``.
    """

    config: dict[str, Any]
    scale: float
    fit_epochs: int
    fit_loss: float
    keys: list[str]
    vectors: np.ndarray
    anchor_graphs: dict[str, nx.DiGraph]
    trained_pairs: set[_PairKey]
    ged_cache: dict[_PairKey, float]


def write_model(path: str | Path, model: SavedModel) -> Path:
    """Writes ``model`` to ``path`` (see :meth:`Transformer2vec.save`).

    Returns:
        The path written.
    """
    out = Path(path)
    meta = {
        "format": _FORMAT_NAME,
        "version": FORMAT_VERSION,
        "config": model.config,
        "scale": model.scale,
        "fit_epochs": model.fit_epochs,
        "fit_loss": model.fit_loss if math.isfinite(model.fit_loss) else None,
    }
    table = list(model.keys)
    position = {key: i for i, key in enumerate(table)}

    def indices(pairs: Iterable[_PairKey]) -> np.ndarray:
        rows = []
        for pair in pairs:
            for key in pair:
                if key not in position:
                    position[key] = len(table)
                    table.append(key)
            rows.append((position[pair[0]], position[pair[1]]))
        return np.array(rows, dtype=np.int32).reshape(-1, 2)

    cached = sorted(model.ged_cache.items())
    ged_pairs = indices(pair for pair, _ in cached)
    trained_pairs = indices(sorted(model.trained_pairs))
    anchor_keys = indices((key, key) for key in model.anchor_graphs)[:, 0]
    anchors = [nx.node_link_data(graph, edges="edges") for graph in model.anchor_graphs.values()]
    arrays: dict[str, np.ndarray] = {
        "meta": _utf8(meta),
        "keys": _utf8(table),
        "vectors": model.vectors,
        "anchor_keys": anchor_keys,
        "anchor_graphs": _utf8(anchors),
        "trained_pairs": trained_pairs,
        "ged_pairs": ged_pairs,
        "ged_values": np.array([value for _, value in cached], dtype=np.float64),
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    handle, temporary = tempfile.mkstemp(dir=out.parent, prefix=out.name, suffix=".tmp")
    try:
        with os.fdopen(handle, "wb") as stream:
            np.savez_compressed(stream, allow_pickle=False, **arrays)
        os.replace(temporary, out)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise
    return out


def read_model(path: str | Path) -> SavedModel:
    """Reads a file written by :func:`write_model`.

    Raises:
        ValueError: when the file is not a Transformer2vec file or has another version
            (a cache of an older version is refitted by its owner, not read).
    """
    try:
        with np.load(Path(path), allow_pickle=False) as data:
            arrays = {name: data[name] for name in data.files}
        meta = _from_utf8(arrays["meta"])
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(
            f"{path} is not a Transformer2vec file ({e}); write it with Transformer2vec.save"
        ) from e
    if (
        not isinstance(meta, dict)
        or meta.get("format") != _FORMAT_NAME
        or meta.get("version") != FORMAT_VERSION
    ):
        found = meta if isinstance(meta, dict) else {}
        raise ValueError(
            f"{path} is {found.get('format')!r} version {found.get('version')!r}; this code "
            f"reads {_FORMAT_NAME} version {FORMAT_VERSION}: refit and save again"
        )
    table = [str(key) for key in _from_utf8(arrays["keys"])]
    vectors = arrays["vectors"].astype(np.float64, copy=False)
    graphs = _from_utf8(arrays["anchor_graphs"])
    return SavedModel(
        config=meta["config"],
        scale=float(meta["scale"]),
        fit_epochs=int(meta["fit_epochs"]),
        fit_loss=math.nan if meta["fit_loss"] is None else float(meta["fit_loss"]),
        keys=table[: len(vectors)],
        vectors=vectors,
        anchor_graphs={
            table[i]: nx.node_link_graph(graph, directed=True, multigraph=False, edges="edges")
            for i, graph in zip(arrays["anchor_keys"].tolist(), graphs, strict=True)
        },
        trained_pairs={(table[a], table[b]) for a, b in arrays["trained_pairs"].tolist()},
        ged_cache={
            (table[a], table[b]): float(value)
            for (a, b), value in zip(
                arrays["ged_pairs"].tolist(), arrays["ged_values"].tolist(), strict=True
            )
        },
    )


def _utf8(obj: Any) -> np.ndarray:
    """``obj`` as compact UTF-8 JSON bytes (``uint8``): one byte per ASCII character, where a
    NumPy string array takes four per character of its longest entry."""
    text = json.dumps(obj, separators=(",", ":"))
    return np.frombuffer(text.encode(), dtype=np.uint8)


def _from_utf8(array: np.ndarray) -> Any:
    """Inverse of :func:`_utf8`; a version-1 file's string ``meta`` reads too (so ``load`` can
    name its version)."""
    if array.dtype.kind == "U":
        return json.loads(str(array))
    return json.loads(array.tobytes().decode())
