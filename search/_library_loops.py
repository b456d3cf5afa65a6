"""The base of the search loops that choose among a library of embedded candidates.

FlexiBERT's search (Tuli et al., 2023) does not ask a sampler for parameters: it embeds every
architecture of a *library* with Transformer2vec (graph edit distance -> 16-d Euclidean
vectors), fits a surrogate on the embeddings of the trained ones, and proposes library rows.
:class:`LibraryLoop` does that behind :class:`SearchLoop`; :class:`~archsearch.search.BoshnasLoop`
and :class:`~archsearch.search.EmbeddingGPLoop` choose the surrogate.

1. The library and its embeddings: :class:`~archsearch.search._library.CandidateLibrary`.
2. Each ``suggest`` reads the snapshot's trials (the history is the storage's, so a restarted
   server rebuilds everything), maps them to library rows (``search/_library_history.py``), and
   pops the next row of a *batch* proposed for the current history: a batch of ``batch_size``
   distinct rows that are neither observed nor in flight, so many idle workers get different
   candidates without one surrogate fit per worker. A new result invalidates the batch.
3. A suggestion carries its row and why it was chosen as attributes (``LOOP_ATTR``,
   ``KIND_ATTR``), which the next snapshots give back; with ``weight_transfer`` its recipe
   names the neighbour to fine-tune from (``search/_weight_transfer.py``). The server creates
   the trial with the row's parameters (the space's ``to_params``), so the dashboard shows them
   like any sampler's.

Observations: COMPLETE trials, with their objective values (all of them, with the study's
directions, for multi-objective studies). PRUNED and FAILED trials are excluded from proposals
but are not observations (a pruned score is a partial one).
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import logging
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna

from archsearch.search._base import LoopSnapshot, SearchLoop, Suggestion
from archsearch.search._library import (
    CACHE_DIR_ENV,
    FEATURES,
    CandidateLibrary,
    JointRows,
    arch_key,
    check_embedding_options,
    default_cache_root,
    positive_int,
)
from archsearch.search._library_history import KIND_ATTR, LOOP_ATTR, history, in_flight_rows
from archsearch.search._weight_transfer import transfer_source
from archsearch.spaces import DesignSpace, SpecError

if TYPE_CHECKING:  # surrogates import torch: loaded only when a library loop is built
    from archsearch.surrogates import LibraryProposer

log = logging.getLogger(__name__)

#: The largest library a loop builds: 10x the default, minutes to embed on the server's CPU
MAX_LIBRARY_SIZE = 50_000
#: With ``features: auto``: the feature set the surrogate used for a proposal.
FEATURES_ATTR = "archsearch:features"
#: ``features`` values: a fixed feature set, or ``auto`` (chosen as results arrive).
FEATURE_OPTIONS = (*FEATURES, "auto")

__all__ = [
    "CACHE_DIR_ENV",
    "KIND_ATTR",
    "LOOP_ATTR",
    "LibraryLoop",
    "arch_key",
]


class LibraryLoop(SearchLoop):
    avoids_known = True
    needs_graph_space = True
    chooses_data = True

    """A loop that proposes rows of a :class:`CandidateLibrary` (see the module docstring).

    Subclasses build the proposer. Options common to both library loops:
        library_size (int, default 5000): rows drawn when the space has no enumeration.
        library_seed (int, default 0): seed of that draw and of the embedding fit.
        batch_size (int, default 8): rows proposed per surrogate fit.
        embedding_dim (int, default 16): Transformer2vec dimension.
        embedding (dict): extra Transformer2vec settings (``partners``, ``epochs``).
        weight_transfer (bool, default false): FlexiBERT's knowledge transfer. Each proposal
            gets ``recipe.transfer_from`` = the kept checkpoint (``recipe.keep_checkpoint``)
            of the completed trial whose weights cover the largest share of the new
            architecture (``spaces.weight_overlap``), when that share is at least
            ``OVERLAP_THRESHOLD`` (0.8, the paper's rule); the worker then fine-tunes from the
            neighbour (with ``pretrain_steps`` set, instead of pre-training). A checkpoint
            its worker uploaded to the server (info ``checkpoint_artifacts``) is named
            ``"trial:N"`` and any worker downloads it; otherwise it is the folder on the worker
            that trained it (one worker machine or a shared filesystem).
        features (str, default "both"; "embedding" for embedding-gp): what the surrogate
            sees of a row: ``embedding``
            (the Transformer2vec vector, as the paper), ``architecture`` (one-hot codes of the
            space's readable per-layer parameters), ``both`` (concatenated), ``numeric``
            (those parameters with numbers as scaled numbers, ``search._param_codes``),
            ``embedding+numeric`` (the embedding and the numeric codes; on a space without
            graphs, ``both`` and ``embedding+numeric`` are the codes alone) or
            ``numeric+totals`` (the numeric codes and the sum and mean of each group of
            per-layer numbers). On the
            FlexiBERT-small SST-2 table ``both`` reaches the top 1% in about half the
            evaluations ``embedding`` needs (benchmarks/nas_table.py): the graph-edit
            embedding alone ranks this table's scores poorly. ``auto``: before each fit, the
            feature set whose Gaussian-process leave-one-out predictions rank the observed
            scores best (Spearman; ``surrogates.choose_features``), one surrogate per set.
    """

    #: ``features`` when the options do not say.
    DEFAULT_FEATURES = "both"
    _OPTIONS = frozenset(
        {
            "library_size",
            "library_seed",
            "batch_size",
            "embedding_dim",
            "embedding",
            "weight_transfer",
            "features",
        }
    )

    def __init__(
        self,
        name: str,
        seed: int | None,
        n_objectives: int,
        options: dict[str, Any] | None,
        own_options: frozenset[str],
    ) -> None:
        opts = dict(options or {})
        unknown = sorted(set(opts) - self._OPTIONS - own_options)
        if unknown:
            raise SpecError(
                f"loop_options.{unknown[0]}",
                f"unknown option of the {name} loop",
                f"known: {', '.join(sorted(self._OPTIONS | own_options))}",
            )
        self.name = name
        self.seed = 0 if seed is None else int(seed)
        self.n_objectives = n_objectives
        self.library_size = positive_int(opts, "library_size", 5000, most=MAX_LIBRARY_SIZE)
        self.library_seed = opts.get("library_seed", 0)
        if isinstance(self.library_seed, bool) or not isinstance(self.library_seed, int):
            raise SpecError(
                "loop_options.library_seed", f"must be an int, got {self.library_seed!r}"
            )
        self.batch_size = positive_int(opts, "batch_size", 8, most=1024)
        self.embedding_dim = positive_int(opts, "embedding_dim", 16, most=1024)
        emb = opts.get("embedding", {})
        if not isinstance(emb, dict):
            raise SpecError("loop_options.embedding", "must be a JSON object")
        check_embedding_options(emb, self.embedding_dim, self.library_seed)
        self.embedding_options = dict(emb)
        self.weight_transfer = opts.get("weight_transfer", False)
        if not isinstance(self.weight_transfer, bool):
            raise SpecError("loop_options.weight_transfer", "must be true or false")
        self.features = opts.get("features", self.DEFAULT_FEATURES)
        if self.features not in FEATURE_OPTIONS:
            raise SpecError(
                "loop_options.features",
                f"unknown feature kind {self.features!r}",
                f"one of: {', '.join(FEATURE_OPTIONS)}",
            )
        self.own_options = {k: v for k, v in opts.items() if k in own_options}
        # Enqueued / re-queued trials carry fixed parameters; nothing else is sampled.
        self._sampler = optuna.samplers.RandomSampler(seed=self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._library: CandidateLibrary | None = None
        #: guards ``_library`` (built by ``warm_up``'s thread or by the first ask)
        self._library_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._proposer: LibraryProposer | None = None  # the one of the last proposal
        self._proposers: dict[str, LibraryProposer] = {}  # per feature set (``auto``)
        self._used_features = "" if self.features == "auto" else self.features
        self._directions: list[str] = ["maximize"] * n_objectives
        self._pending: list[Any] = []  # Proposals of the current batch, best first
        self._pending_for: int = -1
        self.cache_root: Path | None = default_cache_root()

    @property
    def sampler(self) -> optuna.samplers.BaseSampler:
        return self._sampler

    @abc.abstractmethod
    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        """The surrogate-backed proposer (one per loop; it may keep warm-started models)."""

    def library(self, space: DesignSpace) -> CandidateLibrary:
        """The library of ``space``, built (or loaded from the cache) on first use."""
        with self._library_lock:
            if self._library is None or self._library.space is not space:
                self._library = CandidateLibrary(
                    space,
                    self.library_size,
                    self.library_seed,
                    self.embedding_dim,
                    self.cache_root,
                    self.embedding_options,
                )
            return self._library

    def warm_up(self, space: DesignSpace, on_ready: Callable[[], None] | None = None) -> None:
        """Builds the library (embedding thousands of graphs can take half a minute) on a
        background thread; a failure is logged and left to the first ask, which builds again
        and reports it."""
        if self._builder is not None or self._library is not None:
            return

        def build() -> None:
            started = datetime.datetime.now()
            try:
                lib = self.library(space)
                took = (datetime.datetime.now() - started).total_seconds()
                log.info("%s library ready: %d rows in %.1fs", self.name, len(lib), took)
            except Exception as e:  # the first ask builds again and raises it
                log.warning("building the %s library failed: %s", self.name, e)
            finally:
                if on_ready is not None:
                    on_ready()

        self._builder = threading.Thread(target=build, name=f"{self.name}-library", daemon=True)
        self._builder.start()

    def ready(self, space: DesignSpace) -> bool:
        builder = self._builder
        return builder is None or not builder.is_alive()

    def suggest(self, snapshot: LoopSnapshot, count: int = 1) -> list[Suggestion]:
        """Pops the next rows of the batch proposed for the snapshot's history (a new batch
        when a result arrived since, or when it ran out); see the module docstring.

        Raises:
            SpecError: Every library row is observed or in flight.
        """
        space = snapshot.space
        lib = self.library(space)
        self._directions = list(snapshot.directions)
        joint = JointRows(lib, snapshot.data_space)
        if self._proposer is None:
            self._proposer = self.make_proposer(self._directions)
        observed, values, kinds, excluded, random_in_flight = history(snapshot, joint)
        if len(observed) != self._pending_for:
            self._pending, self._pending_for = [], len(observed)
        taken = set(excluded.tolist())
        in_flight = set(in_flight_rows(snapshot, joint)) - set(observed.tolist())
        out = []
        for _ in range(count):
            if getattr(self._proposer, "uses_pending", False):
                self._pending = []  # every suggestion sees the ones before it in flight
            self._pending = [p for p in self._pending if p.index not in taken]
            if not self._pending:
                free = len(joint) - len(taken)
                if free <= 0:
                    raise SpecError(
                        "n_trials",
                        f"every one of the {len(joint)} library candidates is observed or in "
                        "flight",
                        "lower n_trials or raise loop_options.library_size",
                    )
                with _one_torch_thread():
                    self._pending = self._propose(
                        joint,
                        observed,
                        values,
                        np.asarray(sorted(taken), dtype=np.int64),
                        kinds,
                        free,
                        random_in_flight,
                        np.asarray(sorted(in_flight), dtype=np.int64),
                    )
            proposal = self._pending.pop(0)
            index, kind = int(proposal.index), str(proposal.kind)
            # The next suggestion of this call sees this one in flight, as the next call would.
            taken.add(index)
            in_flight.add(index)
            random_in_flight += kind == "random"
            row, data = joint.split(index)
            arch = lib.archs[row]
            recipe: dict[str, Any] = {}
            if self.weight_transfer:
                neighbour = transfer_source(snapshot, arch)
                if neighbour is not None:
                    recipe["transfer_from"] = neighbour
            attrs: dict[str, Any] = {LOOP_ATTR: row, KIND_ATTR: kind}
            if self.features == "auto" and kind != "random":
                attrs[FEATURES_ATTR] = self._used_features
            out.append(Suggestion(architecture=arch, recipe=recipe, data=data, attrs=attrs))
        return out

    def _propose(
        self,
        joint: JointRows,
        observed: np.ndarray,
        values: np.ndarray,
        excluded: np.ndarray,
        kinds: list[str],
        free: int,
        random_in_flight: int,
        in_flight: np.ndarray,
    ) -> list[Any]:
        features = self._choose_features(joint, observed, values)
        if features not in self._proposers:  # the first set takes the proposer built first
            first = self._proposer if not self._proposers else None
            self._proposers[features] = first or self.make_proposer(self._directions)
        self._proposer = self._proposers[features]
        self._used_features = features
        return list(
            self._proposer.propose_with_kinds(
                joint.features(features),
                observed,
                values,
                excluded,
                min(self.batch_size, free),
                self._rng,
                observed_kinds=kinds,
                random_in_flight=random_in_flight,
                pending_idx=in_flight,
            )
        )

    def _choose_features(self, joint: JointRows, observed: np.ndarray, values: np.ndarray) -> str:
        """``features``, or with ``auto`` the set that ranks the observations best (the
        ``both`` set until three results are in)."""
        if self.features != "auto":
            return self.features
        if len(observed) < 3:
            return "both"
        from archsearch.surrogates import choose_features

        oriented = values * np.where(np.asarray(self._directions) == "maximize", 1.0, -1.0)
        low, span = oriented.min(axis=0), np.ptp(oriented, axis=0)
        performance = ((oriented - low) / np.where(span > 0, span, 1.0)).mean(axis=1)
        candidates = {}
        for kind in ("both", "embedding", "architecture"):
            try:
                candidates[kind] = joint.features(kind)
            except SpecError:  # a space without graphs (a table of parameters): no embedding
                continue
        return choose_features(candidates, observed, performance).kind


@contextlib.contextmanager
def _one_torch_thread() -> Iterator[None]:
    """The surrogates' nets are tiny: one intra-op thread is faster than several (20-30x
    under load, measured), and the server's other threads keep the second core."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)
