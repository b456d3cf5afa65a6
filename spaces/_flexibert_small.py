"""FlexiBERT's small space, the space of the ``flexibert-small`` tabular benchmark.

2 or 4 layers; per layer: attention heads 2|4, hidden size 128|256, similarity sdp|wma,
feed-forward size 512|1024|2048. Architectures use the table's own format
``{"l": layers, "a": [...], "h": [...], "s": [...], "f": [...]}``.

The Optuna parameters are per layer and conditional on the layer count (``num_layers``,
``l{i}.heads``, ``l{i}.hidden``, ``l{i}.similarity``, ``l{i}.feed_forward``): at most three
choices each, so a trial's distributions stay small in the storage and the dashboard, and
parameter importances mean something.

With the ``table`` option the space keeps only the architectures the table scores on ``task``.
Their per-layer choices are not a product set, so a sampler's per-layer suggestion may be no
table row: ``suggest`` then maps it to the nearest row (fewest differing per-layer choices,
same layer count when the table has any; ties broken by a hash of the suggestion, so the
mapping is a pure function of the parameters and ``suggest(FixedTrial(params))`` rebuilds it)
and records the suggestion in the trial's user attribute ``mapped_from`` (its compact
description, e.g. ``L2[4x256sdp-f1024 4x256sdp-f1024]``: layers, then heads x hidden,
similarity and feed-forward size per layer). ``to_params(row)`` is the row's own per-layer
choices, so an enqueued row is suggested exactly, without mapping.
"""

from __future__ import annotations

import hashlib
import random
from typing import TYPE_CHECKING, Any

import numpy as np

from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._graph import architecture_graph, graph_image, ordered_labels
from archsearch.spaces._options import reject_unknown
from archsearch.spaces._protocols import (
    EnumerableSpace,
    FeatureSpace,
    FlexiBertConvertible,
    GraphImageSpace,
    GraphSpace,
    MutableSpace,
)
from archsearch.spaces._table import arch_key, load_table

if TYPE_CHECKING:
    from collections.abc import Iterator

    import networkx as nx
    import optuna

LAYERS = [2, 4]
HEADS = [2, 4]
HIDDEN = [128, 256]
SIMILARITY = ["sdp", "wma"]
FEED_FORWARD = [512, 1024, 2048]

#: Trial user attribute: the suggested architecture a table-restricted space mapped to a row.
MAPPED_FROM_ATTR = "mapped_from"


@SPACES.register("flexibert-small")
class FlexiBertSmallSpace(
    DesignSpace,
    GraphSpace,
    EnumerableSpace,
    FeatureSpace,
    FlexiBertConvertible,
    GraphImageSpace,
    MutableSpace,
):
    """FlexiBERT's small heterogeneous space (see the module docstring).

    Options:
        table: path of a FlexiBERT table JSON; keep only architectures it scores on ``task``.
        task: task whose scores decide membership (default "sst2"); set from the spec's task.
    """

    name = "flexibert-small"

    def __init__(self, **options: Any) -> None:
        reject_unknown(options, {"table", "task"})
        self.table_path: str | None = options.get("table")
        self.task: str = options.get("task", "sst2")
        self.members: dict[str, dict[str, Any]] | None = None
        if not isinstance(self.task, str):
            raise SpecError("space_options.task", f"must be a task id string, got {self.task!r}")
        self._codes: dict[int, tuple[list[str], np.ndarray]] = {}
        if self.table_path is not None:
            if not isinstance(self.table_path, str):
                raise SpecError("space_options.table", "must be a file path string")
            try:
                table = load_table(self.table_path)
                scored = table.scored(self.task)
            except SpecError as e:  # the table's own errors, named under the option
                field = "space_options.task" if e.field == "task" else "space_options.table"
                raise SpecError(field, e.problem, e.fix) from e
            if not scored:
                raise SpecError(
                    "space_options.table",
                    f"{self.table_path} scores no architecture on task {self.task!r}",
                    "pick a task the table has scores for",
                )
            members = {}
            for a in scored:
                try:
                    arch = self.validate(a)
                except SpecError as e:
                    raise SpecError(
                        "space_options.table",
                        f"{self.table_path} holds an architecture outside flexibert-small: {e}",
                    ) from e
                members[self.describe(arch)] = arch
            self.members = members
            self._codes = self._member_codes(self.members)

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task}
        if self.table_path is not None:
            out["table"] = self.table_path
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        layers = int(trial.suggest_categorical("num_layers", LAYERS))
        arch: dict[str, Any] = {"l": layers, "a": [], "h": [], "s": [], "f": []}
        for i in range(layers):
            arch["a"].append(trial.suggest_categorical(f"l{i}.heads", HEADS))
            arch["h"].append(trial.suggest_categorical(f"l{i}.hidden", HIDDEN))
            arch["s"].append(trial.suggest_categorical(f"l{i}.similarity", SIMILARITY))
            arch["f"].append(trial.suggest_categorical(f"l{i}.feed_forward", FEED_FORWARD))
        if self.members is None:
            return self.validate(arch)
        row = self.nearest_member(arch)
        if self.describe(row) != self.describe(arch):
            trial.set_user_attr(MAPPED_FROM_ATTR, self.describe(arch))
        return dict(row)

    @staticmethod
    def _code(arch: dict[str, Any]) -> list[int]:
        """Per-layer choice indices, layer by layer (heads, hidden, similarity, feed-forward)."""
        code = []
        for i in range(arch["l"]):
            code += [
                HEADS.index(arch["a"][i]),
                HIDDEN.index(arch["h"][i]),
                SIMILARITY.index(arch["s"][i]),
                FEED_FORWARD.index(arch["f"][i]),
            ]
        return code

    @classmethod
    def _member_codes(
        cls, members: dict[str, dict[str, Any]]
    ) -> dict[int, tuple[list[str], np.ndarray]]:
        """Per layer count: the members' descriptions and their choice codes (one row each)."""
        by_layers: dict[int, tuple[list[str], list[list[int]]]] = {}
        for desc, arch in members.items():
            names, codes = by_layers.setdefault(arch["l"], ([], []))
            names.append(desc)
            codes.append(cls._code(arch))
        return {
            n: (names, np.array(codes, dtype=np.int8)) for n, (names, codes) in by_layers.items()
        }

    def nearest_member(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """The table row nearest to ``architecture`` (itself when it is a row): fewest differing
        per-layer choices among rows with its layer count (the other count's rows when the
        table has none: the shared layers compared, each missing layer counting four
        differences); ties broken by a hash of ``architecture``'s description, a pure function
        that favours no row order."""
        assert self.members is not None
        desc = self.describe(architecture)
        if desc in self.members:
            return self.members[desc]
        layers = architecture["l"] if architecture["l"] in self._codes else None
        code = np.array(self._code(architecture), dtype=np.int8)
        candidates: list[tuple[int, str]] = []
        for n, (names, codes) in self._codes.items():
            if layers is not None and n != layers:
                continue
            shared = min(n, architecture["l"]) * 4
            distance = (codes[:, :shared] != code[:shared]).sum(axis=1) + 4 * abs(
                n - architecture["l"]
            )
            candidates += zip(distance.tolist(), names, strict=True)
        best = min(d for d, _ in candidates)
        tied = sorted(name for d, name in candidates if d == best)
        pick = int.from_bytes(hashlib.sha256(desc.encode()).digest()[:8], "big") % len(tied)
        return self.members[tied[pick]]

    def neighbours(self, architecture: dict[str, Any]) -> list[dict[str, Any]]:
        """The architectures one parameter away (see :class:`MutableSpace`): the other layer
        count (the shared layers kept, new ones repeating the last), then per layer its heads,
        hidden size, similarity and feed-forward size. With the ``table`` option, only the
        rows among them; a row with none gets the rows nearest to it (fewest differing
        per-layer choices, same layer count), so every row has neighbours."""
        arch = self.validate(architecture)
        n = arch["l"]
        out = []
        for layers in LAYERS:
            if layers != n:
                out.append(
                    {k: arch[k][:layers] + [arch[k][-1]] * max(0, layers - n) for k in "ahsf"}
                )
                out[-1]["l"] = layers
        for i in range(n):
            for key, choices in (
                ("a", HEADS),
                ("h", HIDDEN),
                ("s", SIMILARITY),
                ("f", FEED_FORWARD),
            ):
                for value in choices:
                    if value != arch[key][i]:
                        out.append({**arch, key: [*arch[key][:i], value, *arch[key][i + 1 :]]})
        out = [{k: a[k] for k in ("l", "a", "h", "s", "f")} for a in out]
        if self.members is None:
            return out
        rows = [self.members[d] for d in map(self.describe, out) if d in self.members]
        return [dict(r) for r in rows] or self._nearest_members(arch)

    def _nearest_members(self, arch: dict[str, Any]) -> list[dict[str, Any]]:
        """The rows at the smallest non-zero per-layer distance from ``arch`` among rows with
        its layer count (every row when the table has none with it), in table order."""
        assert self.members is not None
        code = np.array(self._code(arch), dtype=np.int8)
        best: list[tuple[int, str]] = []
        for n, (names, codes) in self._codes.items():
            if n != arch["l"] and arch["l"] in self._codes:
                continue
            shared = min(n, arch["l"]) * 4
            dist = (codes[:, :shared] != code[:shared]).sum(axis=1) + 4 * abs(n - arch["l"])
            best += [(int(d), name) for d, name in zip(dist, names, strict=True) if d > 0]
        if not best:
            return []
        low = min(d for d, _ in best)
        return [dict(self.members[name]) for d, name in best if d == low]

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict):
            raise SpecError("architecture", "must be a JSON object with keys l, a, h, s, f")
        extra = sorted(set(architecture) - {"l", "a", "h", "s", "f"})
        if extra:
            raise SpecError(f"architecture.{extra[0]}", "unknown field", "keys are l, a, h, s, f")
        layers = architecture.get("l")
        if layers not in LAYERS or isinstance(layers, bool):
            raise SpecError("architecture.l", f"must be one of {LAYERS}, got {layers!r}")
        out: dict[str, Any] = {"l": layers}
        for key, choices in (("a", HEADS), ("h", HIDDEN), ("s", SIMILARITY), ("f", FEED_FORWARD)):
            values = architecture.get(key)
            if not isinstance(values, list) or len(values) != layers:
                raise SpecError(f"architecture.{key}", f"must be a list of {layers} values")
            for v in values:
                if v not in choices or isinstance(v, bool):
                    raise SpecError(f"architecture.{key}", f"{v!r} not in {choices}")
            out[key] = list(values)
        if self.members is not None and self.describe(out) not in self.members:
            raise SpecError(
                "architecture",
                f"{self.describe(out)} has no {self.task} score in {self.table_path}",
                "drop space_options.table to search the whole space",
            )
        return out

    def sample(self, rng: random.Random) -> dict[str, Any]:
        if self.members is not None:
            return dict(rng.choice(list(self.members.values())))
        layers = rng.choice(LAYERS)
        return {
            "l": layers,
            "a": [rng.choice(HEADS) for _ in range(layers)],
            "h": [rng.choice(HIDDEN) for _ in range(layers)],
            "s": [rng.choice(SIMILARITY) for _ in range(layers)],
            "f": [rng.choice(FEED_FORWARD) for _ in range(layers)],
        }

    @staticmethod
    def _layer_params(arch: dict[str, Any]) -> dict[str, Any]:
        params: dict[str, Any] = {"num_layers": arch["l"]}
        for i in range(arch["l"]):
            params[f"l{i}.heads"] = arch["a"][i]
            params[f"l{i}.hidden"] = arch["h"][i]
            params[f"l{i}.similarity"] = arch["s"][i]
            params[f"l{i}.feed_forward"] = arch["f"][i]
        return params

    def feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        """Per-layer readable choices (``num_layers``, ``l{i}.heads``, ...): what a
        surrogate's architecture features are built from (the same as ``to_params``)."""
        return self._layer_params(self.validate(architecture))

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        return self._layer_params(self.validate(architecture))

    def describe(self, architecture: dict[str, Any]) -> str:
        a = architecture
        layers = " ".join(f"{a['a'][i]}x{a['h'][i]}{a['s'][i]}-f{a['f'][i]}" for i in range(a["l"]))
        return f"L{a['l']}[{layers}]"

    @staticmethod
    def key(architecture: dict[str, Any]) -> tuple[Any, ...]:
        return arch_key(architecture)

    def enumerate(self) -> Iterator[dict[str, Any]]:
        """Every architecture of the space when the table restricts it; nothing otherwise
        (the whole small space has 24**2 + 24**4 = 332,352 architectures: sample it)."""
        if self.members is not None:
            for arch in self.members.values():
                yield dict(arch)

    @staticmethod
    def to_flexibert(architecture: dict[str, Any]) -> dict[str, Any]:
        """The architecture in the full FlexiBERT format (``o="sa"``, ``p=s``, ``n=a``,
        ``f=[[f]]``), which graphs, embeddings and the worker's models use."""
        a = architecture
        return {
            "l": a["l"],
            "o": ["sa"] * a["l"],
            "p": list(a["s"]),
            "h": list(a["h"]),
            "n": list(a["a"]),
            "f": [[f] for f in a["f"]],
        }

    def graph(self, architecture: dict[str, Any]) -> nx.DiGraph:
        """The computational graph of ``architecture`` (``spaces._graph``)."""
        return architecture_graph(self.to_flexibert(architecture))

    @staticmethod
    def graph_labels() -> list[str]:
        """The graph-label vocabulary whose order defines graph-edit costs."""
        return ordered_labels(HIDDEN, FEED_FORWARD, [])

    def graph_image(self, architecture: dict[str, Any]) -> bytes:
        """A PNG picture of the architecture's graph, captioned with ``describe``."""
        return graph_image(self.to_flexibert(architecture), title=self.describe(architecture))
