"""FlexiBERT's small space, the space of the ``flexibert-small`` tabular benchmark.

2 or 4 layers; per layer: attention heads 2|4, hidden size 128|256, similarity sdp|wma,
feed-forward size 512|1024|2048. Architectures use the table's own format
``{"l": layers, "a": [...], "h": [...], "s": [...], "f": [...]}``.

With the ``table`` option the space keeps only the architectures the table scores on ``task``.
Their per-layer choices are not a product set, so the Optuna parameter is then one categorical
``architecture`` over their compact descriptions (readable, e.g.
``L2[4x256sdp-f1024 4x256sdp-f1024]``: layers, then heads x hidden, similarity and feed-forward
size per layer); without it the parameters are per layer and conditional on the
layer count (``l{i}.heads``, ``l{i}.hidden``, ``l{i}.similarity``, ``l{i}.feed_forward``).
"""

from __future__ import annotations

import random
from typing import TYPE_CHECKING, Any

from archsearch.spaces._base import DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._graph import architecture_graph, graph_image, ordered_labels
from archsearch.spaces._options import reject_unknown
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


class FlexiBertSmallSpace(DesignSpace):
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

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {"task": self.task}
        if self.table_path is not None:
            out["table"] = self.table_path
        return out

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        if self.members is not None:
            desc = trial.suggest_categorical("architecture", list(self.members))
            return self.members[str(desc)]
        layers = int(trial.suggest_categorical("num_layers", LAYERS))
        arch: dict[str, Any] = {"l": layers, "a": [], "h": [], "s": [], "f": []}
        for i in range(layers):
            arch["a"].append(trial.suggest_categorical(f"l{i}.heads", HEADS))
            arch["h"].append(trial.suggest_categorical(f"l{i}.hidden", HIDDEN))
            arch["s"].append(trial.suggest_categorical(f"l{i}.similarity", SIMILARITY))
            arch["f"].append(trial.suggest_categorical(f"l{i}.feed_forward", FEED_FORWARD))
        return self.validate(arch)

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
        """Per-layer readable choices (``num_layers``, ``l{i}.heads``, ...) whatever the
        ``table`` option: what a surrogate's architecture features are built from, where
        ``to_params`` gives the one categorical of the table mode."""
        return self._layer_params(self.validate(architecture))

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        arch = self.validate(architecture)
        if self.members is not None:
            return {"architecture": self.describe(arch)}
        return self._layer_params(arch)

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
