"""Search loops that choose among a library of embedded candidates: BOSHNAS and a BoTorch GP.

FlexiBERT's search (Tuli et al., 2023) does not ask a sampler for parameters: it embeds every
architecture of a *library* with Transformer2vec (graph edit distance -> 16-d Euclidean
vectors), fits a surrogate on the embeddings of the trained ones, and proposes library rows.
These loops do that inside the service:

1. The library: the space's own enumeration when it has one (the ``flexibert-small`` table's
   620 scored architectures, the hierarchical FlexiBERT level with 9,312), otherwise
   ``library_size`` distinct architectures drawn from the space with the loop's seed.
2. Embeddings: :class:`~archsearch.surrogates.Transformer2vec` fitted on the library's graphs,
   cached on disk under ``$ARCHSEARCH_CACHE_DIR/embeddings`` (default
   ``~/.cache/archsearch/embeddings``) keyed by the library and the fit's settings: every study
   on the same space reuses them, and a lost cache is only recomputed (the embeddings are a
   pure function of the library and the seed, so the server still keeps no state the storage
   lacks). A trial whose architecture is not in the library (a user's enqueued one) is embedded
   with ``embed_new`` against the library, without refitting it.
3. Each ``ask`` reads the study's trials (the history is the storage's, so a restarted server
   rebuilds everything), maps them to library rows, and pops the next row of a *batch* proposed
   for the current history: a batch of ``batch_size`` distinct rows that are neither observed
   nor in flight, so many idle workers get different candidates without one surrogate fit per
   worker. A new result invalidates the batch.
4. The trial is created in one storage call with its parameters already set (the space's
   ``to_params``), so the dashboard shows them like any sampler's.

Observations: COMPLETE trials, with their objective values (all of them, with the study's
directions, for multi-objective studies). PRUNED and FAILED trials are excluded from proposals
but are not observations (a pruned score is a partial one).
"""

from __future__ import annotations

import abc
import contextlib
import datetime
import hashlib
import json
import logging
import os
import random
import threading
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import optuna
from optuna.trial import FixedTrial, FrozenTrial, TrialState

from archsearch.search._base import SearchLoop
from archsearch.spaces import DesignSpace, SpecError

if TYPE_CHECKING:  # surrogates import torch: loaded only when a library loop is built
    from archsearch.surrogates import LibraryProposer

log = logging.getLogger(__name__)

#: Environment variable naming archsearch's cache root (shared with the worker's teacher cache).
CACHE_DIR_ENV = "ARCHSEARCH_CACHE_DIR"
#: Bump when the library or the embedding cache's layout changes.
EMBEDDING_CACHE_VERSION = 1
#: System attributes of a trial a library loop proposed: its library row, and why it was
#: chosen (``Proposal.kind``; BOSHNAS derives its aleatoric phase from the history of kinds).
LOOP_ATTR = "archsearch:library_row"
KIND_ATTR = "archsearch:proposal_kind"
#: What a library loop's surrogate sees of a row (loop option ``features``).
FEATURES = ("both", "embedding", "architecture")
#: The one-hot value of a parameter an architecture does not have (a layer it lacks).
ABSENT = "<absent>"


def default_cache_root() -> Path:
    """``$ARCHSEARCH_CACHE_DIR/embeddings``, or ``~/.cache/archsearch/embeddings``."""
    base = os.environ.get(CACHE_DIR_ENV)
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "embeddings"


def arch_key(architecture: dict[str, Any]) -> str:
    """A canonical string for an architecture (sorted-key JSON)."""
    return json.dumps(architecture, sort_keys=True, separators=(",", ":"))


class CandidateLibrary:
    """The rows a library loop chooses from: architectures, their keys and embeddings.

    Args:
        space: The study's design space; it must build graphs (``graph(arch)``) and name its
            label vocabulary (``graph_labels()``), as the FlexiBERT spaces do.
        size: Rows drawn when the space has no enumeration of its own.
        seed: Seed of the draw and of the embedding fit.
        dim: Embedding dimension.
        cache_root: Where fitted embeddings are kept (None: no cache).
    """

    def __init__(
        self,
        space: DesignSpace,
        size: int,
        seed: int,
        dim: int,
        cache_root: Path | None,
        embedding_options: dict[str, Any] | None = None,
    ) -> None:
        from archsearch.surrogates import Transformer2vec

        graph = getattr(space, "graph", None)
        labels = getattr(space, "graph_labels", None)
        if graph is None or labels is None:
            raise SpecError(
                "loop",
                f"the {space.name!r} space has no architecture graphs, which library loops embed",
                "use the flexibert or flexibert-small space, or another loop",
            )
        self.space = space
        # The library and its embeddings belong to the space, not to a study: the seed is the
        # loop option ``library_seed`` (default 0), not the study's, so every study on a space
        # shares one cached fit.
        self.archs = _library_architectures(space, size, seed)
        self.keys = [arch_key(a) for a in self.archs]
        self.index = {k: i for i, k in enumerate(self.keys)}
        self._graph: Callable[[dict[str, Any]], Any] = graph
        self._options = dict(embedding_options or {})
        self._t2v = Transformer2vec(labels=labels(), dim=dim, seed=seed, **self._options)
        self._lock = threading.Lock()
        digest = hashlib.sha256(
            json.dumps(
                [
                    EMBEDDING_CACHE_VERSION,
                    space.name,
                    space.options(),
                    dim,
                    seed,
                    self._options,
                    self.keys,
                ],
                sort_keys=True,
                default=str,
            ).encode()
        ).hexdigest()[:24]
        path = cache_root / f"{space.name}-{digest}.npz" if cache_root is not None else None
        if path is not None and path.exists():
            try:
                self._t2v = Transformer2vec.load(path)
                log.info("library embeddings loaded from %s", path)
            except (OSError, ValueError, KeyError) as e:
                log.warning("ignoring embedding cache %s (%s); refitting", path, e)
                path.unlink(missing_ok=True)
        if not len(self._t2v.keys):
            graphs = {k: graph(a) for k, a in zip(self.keys, self.archs, strict=True)}
            self._t2v.fit(graphs)
            if path is not None:
                path.parent.mkdir(parents=True, exist_ok=True)
                tmp = path.with_suffix(f".tmp{os.getpid()}.npz")
                self._t2v.save(tmp)
                os.replace(tmp, path)
                log.info("library embeddings (%d rows) cached in %s", len(self.keys), path)
        self.embeddings = np.asarray(self._t2v.vectors(self.keys), dtype=np.float64)
        self._encoder: Any = None  # sklearn OneHotEncoder, fitted on first use
        self._names: list[str] | None = None
        self._onehot: np.ndarray | None = None
        self._both: np.ndarray | None = None  # embeddings | one-hot, rebuilt when rows change

    def __len__(self) -> int:
        return len(self.keys)

    def _feature_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        params = getattr(self.space, "feature_params", None) or self.space.to_params
        return dict(params(architecture))

    def _params_table(self, archs: Sequence[dict[str, Any]]) -> np.ndarray:
        """One row per architecture, one column per parameter name of the library: the value
        as a string, ``ABSENT`` where the architecture lacks the parameter (fewer layers)."""
        rows = [self._feature_params(a) for a in archs]
        if self._names is None:
            self._names = sorted({name for r in rows for name in r})
        return np.asarray(
            [[str(r.get(n, ABSENT)) for n in self._names] for r in rows], dtype=object
        ).reshape(len(rows), len(self._names))

    def architecture_features(self) -> np.ndarray:
        """One-hot codes of every row's readable parameters (``feature_params`` when the space
        has it, else ``to_params``), one column per (parameter, value) of the library, built
        with scikit-learn's ``OneHotEncoder`` on first use. A row added later with a value the
        library lacks gets zeros for that parameter."""
        with self._lock:
            if self._encoder is None:
                from sklearn.preprocessing import OneHotEncoder

                table = self._params_table(self.archs)
                self._encoder = OneHotEncoder(
                    handle_unknown="ignore", sparse_output=False, dtype=np.float64
                ).fit(table)
                self._onehot = self._encoder.transform(table)
            assert self._onehot is not None
            missing = len(self.archs) - self._onehot.shape[0]
            if missing > 0:  # rows added by ``row`` since the encoder was fitted
                extra = self._encoder.transform(self._params_table(self.archs[-missing:]))
                self._onehot = np.vstack([self._onehot, extra])
            return self._onehot

    def features(self, kind: str) -> np.ndarray:
        """The surrogate's inputs: ``embedding`` (Transformer2vec, the paper's), ``architecture``
        (one-hot parameters) or ``both`` (their concatenation)."""
        if kind == "embedding":
            return self.embeddings
        if kind == "architecture":
            return self.architecture_features()
        if kind == "both":
            onehot = self.architecture_features()  # brings rows added by ``row`` up to date
            if self._both is None or self._both.shape[0] != onehot.shape[0]:
                self._both = np.hstack([self.embeddings, onehot])
            return self._both
        raise ValueError(f"unknown feature kind {kind!r}; known: {', '.join(FEATURES)}")

    def row(self, architecture: dict[str, Any]) -> int:
        """The row of ``architecture``, adding (and embedding) it when the library lacks it."""
        key = arch_key(architecture)
        found = self.index.get(key)
        if found is not None:
            return found
        with self._lock:
            vec = self._t2v.embed_new({key: self._graph(architecture)})
            self.archs.append(architecture)
            self.keys.append(key)
            self.index[key] = len(self.keys) - 1
            self.embeddings = np.vstack([self.embeddings, np.asarray(vec, dtype=np.float64)])
            return self.index[key]


def _library_architectures(space: DesignSpace, size: int, seed: int) -> list[dict[str, Any]]:
    """The space's enumeration when it has one, else ``size`` distinct seeded draws."""
    enumerate_ = getattr(space, "enumerate", None)
    if enumerate_ is not None:
        archs = list(enumerate_())
        if archs:
            return archs
    rng = random.Random(seed)
    seen: dict[str, dict[str, Any]] = {}
    attempts = 0
    while len(seen) < size and attempts < size * 20:
        a = space.sample(rng)
        seen.setdefault(arch_key(a), a)
        attempts += 1
    return list(seen.values())


class LibraryLoop(SearchLoop):
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
            space's readable per-layer parameters) or ``both`` (concatenated). On the
            FlexiBERT-small SST-2 table ``both`` reaches the top 1% in about half the
            evaluations ``embedding`` needs (benchmarks/nas_table.py): the graph-edit
            embedding alone ranks this table's scores poorly.
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
        self.library_size = _positive_int(opts, "library_size", 5000)
        self.library_seed = opts.get("library_seed", 0)
        if isinstance(self.library_seed, bool) or not isinstance(self.library_seed, int):
            raise SpecError(
                "loop_options.library_seed", f"must be an int, got {self.library_seed!r}"
            )
        self.batch_size = _positive_int(opts, "batch_size", 8)
        self.embedding_dim = _positive_int(opts, "embedding_dim", 16)
        emb = opts.get("embedding", {})
        if not isinstance(emb, dict):
            raise SpecError("loop_options.embedding", "must be a JSON object")
        _check_embedding_options(emb, self.embedding_dim, self.library_seed)
        self.embedding_options = dict(emb)
        self.weight_transfer = opts.get("weight_transfer", False)
        if not isinstance(self.weight_transfer, bool):
            raise SpecError("loop_options.weight_transfer", "must be true or false")
        self.features = opts.get("features", self.DEFAULT_FEATURES)
        if self.features not in FEATURES:
            raise SpecError(
                "loop_options.features",
                f"unknown feature kind {self.features!r}",
                f"one of: {', '.join(FEATURES)}",
            )
        self._overrides: dict[int, dict[str, Any]] = {}
        self.own_options = {k: v for k, v in opts.items() if k in own_options}
        # Enqueued / re-queued trials carry fixed parameters; nothing else is sampled.
        self._sampler = optuna.samplers.RandomSampler(seed=self.seed)
        self._rng = np.random.default_rng(self.seed)
        self._library: CandidateLibrary | None = None
        #: guards ``_library`` (built by ``warm_up``'s thread or by the first ask)
        self._library_lock = threading.Lock()
        self._builder: threading.Thread | None = None
        self._proposer: LibraryProposer | None = None
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

    def ask(
        self, study: optuna.Study, space: DesignSpace, waiting: bool = True
    ) -> tuple[optuna.Trial, dict[str, Any]]:
        if waiting:  # a re-queued or user-enqueued trial: its parameters are fixed
            return super().ask(study, space, waiting=True)
        lib = self.library(space)
        directions = [d.name.lower() for d in study.directions]
        if self._proposer is None:
            self._proposer = self.make_proposer(directions)
        observed, values, kinds, excluded, random_in_flight = self._history(study, space, lib)
        if len(observed) != self._pending_for:
            self._pending, self._pending_for = [], len(observed)
        taken = set(excluded.tolist())
        self._pending = [p for p in self._pending if p.index not in taken]
        if not self._pending:
            free = len(lib) - len(taken)
            if free <= 0:
                raise SpecError(
                    "n_trials",
                    f"every one of the {len(lib)} library candidates is observed or in flight",
                    "lower n_trials or raise loop_options.library_size",
                )
            with _one_torch_thread():
                self._pending = self._propose(
                    lib, observed, values, excluded, kinds, free, random_in_flight
                )
        proposal = self._pending.pop(0)
        row = int(proposal.index)
        trial, arch = self._create_trial(study, space, lib.archs[row], row, str(proposal.kind))
        if self.weight_transfer:
            neighbour = self._transfer_source(study, space, arch)
            if neighbour is not None:
                self._overrides[trial._trial_id] = {"transfer_from": neighbour}
        return trial, arch

    def recipe_overrides(self, trial_id: int) -> dict[str, Any]:
        overrides = self._overrides.pop(trial_id, {})
        if len(self._overrides) > 10_000:  # trials the server never asked about: forget them
            self._overrides.clear()
        return overrides

    @staticmethod
    def _transfer_source(
        study: optuna.Study, space: DesignSpace, arch: dict[str, Any]
    ) -> str | None:
        """The kept checkpoint of the completed trial with the largest weight overlap with
        ``arch``, when it reaches ``OVERLAP_THRESHOLD``; None otherwise."""
        from archsearch.spaces import OVERLAP_THRESHOLD, weight_overlap

        to_flexibert = getattr(space, "to_flexibert", None)
        if to_flexibert is None:
            return None
        target = to_flexibert(arch)
        best: tuple[float, str] | None = None
        for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            info = t.user_attrs.get("info")
            cand = t.user_attrs.get("candidate")
            if not isinstance(info, dict) or not isinstance(cand, dict):
                continue
            checkpoint = info.get("checkpoint")
            if not isinstance(checkpoint, str):
                continue
            if info.get("checkpoint_artifacts"):  # uploaded to the server: any worker fetches it
                checkpoint = f"trial:{t.number}"
            try:
                overlap = weight_overlap(to_flexibert(cand["architecture"]), target)
            except (SpecError, KeyError, TypeError, ValueError):
                continue
            if best is None or overlap > best[0]:
                best = (overlap, checkpoint)
        if best is None or best[0] < OVERLAP_THRESHOLD:
            return None
        return best[1]

    def _propose(
        self,
        lib: CandidateLibrary,
        observed: np.ndarray,
        values: np.ndarray,
        excluded: np.ndarray,
        kinds: list[str],
        free: int,
        random_in_flight: int,
    ) -> list[Any]:
        assert self._proposer is not None
        return list(
            self._proposer.propose_with_kinds(
                lib.features(self.features),
                observed,
                values,
                excluded,
                min(self.batch_size, free),
                self._rng,
                observed_kinds=kinds,
                random_in_flight=random_in_flight,
            )
        )

    def _history(
        self, study: optuna.Study, space: DesignSpace, lib: CandidateLibrary
    ) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray, int]:
        """Observed rows (in the order their results arrived), their raw objective values
        and proposal kinds, every row any trial holds (observed, in flight or failed), and how
        many rows proposed at random are in flight (part of the initial design)."""
        n_obj = len(study.directions)
        done: list[tuple[Any, int, int, list[float], str]] = []
        done_rows: set[int] = set()  # a re-trained row (a retry) is one observation
        excluded: set[int] = set()
        random_in_flight = 0
        for t in study.get_trials(deepcopy=False):
            row = self._row_of(t, space, lib)
            if row is None:
                continue
            excluded.add(row)
            if t.state in (TrialState.RUNNING, TrialState.WAITING) and (
                t.system_attrs.get(KIND_ATTR) == "random"
            ):
                random_in_flight += 1
            if t.state == TrialState.COMPLETE and t.values is not None:
                vals = [float(v) for v in t.values]
                if len(vals) == n_obj and all(np.isfinite(vals)) and row not in done_rows:
                    done_rows.add(row)
                    kind = str(t.system_attrs.get(KIND_ATTR, "random"))
                    done.append((t.datetime_complete, t.number, row, vals, kind))
        done.sort(key=lambda d: (d[0] is None, d[0] or 0, d[1]))
        return (
            np.asarray([d[2] for d in done], dtype=np.int64),
            np.asarray([d[3] for d in done], dtype=np.float64).reshape(len(done), n_obj),
            [d[4] for d in done],
            np.asarray(sorted(excluded), dtype=np.int64),
            random_in_flight,
        )

    @staticmethod
    def _row_of(t: FrozenTrial, space: DesignSpace, lib: CandidateLibrary) -> int | None:
        row = t.system_attrs.get(LOOP_ATTR)
        if isinstance(row, int) and 0 <= row < len(lib):
            return row
        cand = t.user_attrs.get("candidate")
        try:
            if isinstance(cand, dict) and isinstance(cand.get("architecture"), dict):
                arch = space.validate(cand["architecture"])
            elif t.params:
                arch = space.suggest(FixedTrial(dict(t.params)))  # type: ignore[arg-type]
            else:
                return None
        except (SpecError, ValueError, KeyError):
            return None
        return lib.row(arch)

    @staticmethod
    def _create_trial(
        study: optuna.Study, space: DesignSpace, arch: dict[str, Any], row: int, kind: str
    ) -> tuple[optuna.Trial, dict[str, Any]]:
        """Creates a RUNNING trial with ``arch``'s parameters in one storage call."""
        fixed = FixedTrial(space.to_params(arch))
        space.suggest(fixed)  # type: ignore[arg-type]  # records the distributions
        template = FrozenTrial(
            number=-1,
            state=TrialState.RUNNING,
            value=None,
            values=None,
            datetime_start=datetime.datetime.now(),
            datetime_complete=None,
            params=dict(fixed.params),
            distributions=dict(fixed.distributions),
            user_attrs={},
            system_attrs={LOOP_ATTR: row, KIND_ATTR: kind},
            intermediate_values={},
            trial_id=-1,
        )
        study._thread_local.cached_all_trials = None  # as Study.ask does
        trial_id = study._storage.create_new_trial(study._study_id, template_trial=template)
        trial = optuna.Trial(study, trial_id)
        return trial, space.suggest(trial)


class BoshnasLoop(LibraryLoop):
    """BOSHNAS (Tuli et al.): heteroscedastic neural surrogate + GOBI over the library.

    Options (besides :class:`LibraryLoop`'s), passed to ``surrogates.BoshnasProposer``:
    ``n_init`` (random rows of the initial design, in flight ones included, default 5; the
    paper: 10),
    ``n_starts`` (GOBI starts, default 10), ``performance_bound`` (the best achievable score,
    e.g. 1.0; default derived from the data), ``surrogate_options`` and ``gobi_options`` (dicts),
    ``acquisition_search`` (``scan``, default: rank every free row; ``gobi``: the paper's
    gradient search).
    """

    OWN = frozenset(
        {
            "n_init",
            "n_starts",
            "performance_bound",
            "surrogate_options",
            "gobi_options",
            "acquisition_search",
        }
    )

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__("boshnas", seed, n_objectives, options, self.OWN)
        self.make_proposer(["maximize"] * n_objectives)  # validates the options at launch

    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        from archsearch.surrogates import BoshnasProposer

        try:
            return BoshnasProposer(directions, seed=self.seed, **self.own_options)
        except (TypeError, ValueError) as e:
            raise SpecError("loop_options", f"not accepted by the boshnas loop: {e}") from e


class EmbeddingGPLoop(LibraryLoop):
    """A BoTorch GP (``SingleTaskGP``, qLogEI over the discrete library) on the embeddings.

    Options (besides :class:`LibraryLoop`'s), passed to ``surrogates.EmbeddingGPProposer``:
    ``n_init`` (random rows of the initial design, default 10), ``mc_samples``,
    ``max_batch_size``.
    """

    OWN = frozenset({"n_init", "mc_samples", "max_batch_size"})
    DEFAULT_FEATURES = "embedding"  # the baseline of the issue: a GP on the embeddings

    def __init__(
        self, seed: int | None, n_objectives: int, options: dict[str, Any] | None = None
    ) -> None:
        super().__init__("embedding-gp", seed, n_objectives, options, self.OWN)
        self.make_proposer(["maximize"] * n_objectives)

    def make_proposer(self, directions: Sequence[str]) -> LibraryProposer:
        from archsearch.surrogates import EmbeddingGPProposer

        try:
            return EmbeddingGPProposer(directions, seed=self.seed, **self.own_options)
        except (TypeError, ValueError) as e:
            raise SpecError("loop_options", f"not accepted by the embedding-gp loop: {e}") from e


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


def _check_embedding_options(emb: dict[str, Any], dim: int, seed: int) -> None:
    """Builds the library's embedder with ``emb`` at launch, so that a bad option is a
    SpecError now rather than a crash when the first library is built."""
    from archsearch.surrogates import Transformer2vec

    taken = sorted(set(emb) & {"labels", "dim", "seed"})
    if taken:
        raise SpecError(
            f"loop_options.embedding.{taken[0]}",
            "is set by the loop",
            "use loop_options.embedding_dim or loop_options.library_seed",
        )
    timeout = emb.get("ged_timeout")
    if timeout is not None and (
        isinstance(timeout, bool) or not isinstance(timeout, int | float) or not timeout > 0
    ):
        raise SpecError("loop_options.embedding.ged_timeout", f"must be > 0, got {timeout!r}")
    try:
        Transformer2vec(labels=["x"], dim=dim, seed=seed, **emb)
    except (TypeError, ValueError) as e:
        raise SpecError("loop_options.embedding", str(e)) from e


def _positive_int(opts: dict[str, Any], key: str, default: int) -> int:
    value = opts.get(key, default)
    if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
        raise SpecError(f"loop_options.{key}", f"must be a positive int, got {value!r}")
    return value


LIBRARY_LOOPS: dict[str, Callable[..., SearchLoop]] = {
    "boshnas": BoshnasLoop,
    "embedding-gp": EmbeddingGPLoop,
}
