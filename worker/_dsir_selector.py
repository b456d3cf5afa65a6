"""The ``dsir`` data selector: k training examples (or pre-training texts) towards a target.

``data.selection = {"method": "dsir", "k": 500}`` (or ``"fraction": 0.25``) keeps the k
training examples that importance resampling (:mod:`archsearch.worker._dsir`) picks towards
the task's dev text; ``target`` names other text instead, and ``ngrams``, ``buckets``,
``laplace``, ``min_length``, ``top_k`` and ``seed`` are the method's settings
(:data:`DSIR_DEFAULTS`). Pools and targets are source names
(:mod:`archsearch.worker._text_pools`). The checks of these keys live here, with the selector
(:meth:`DsirSelector.check_options`); ``archsearch.spaces`` checks only their JSON types.

Each selection's provenance (pool hash, selected ids hash, the share of each source, KL to
the target against a random selection of the same size) becomes trial info
(:meth:`DsirSelector.provenance`).

``data.pretrain_selection`` (a FlexiBERT candidate's masked-LM text,
:func:`select_pretrain_texts`) takes ``{"method": "dsir", "pool": [...], "k": N}`` or its
baseline ``{"method": "random", ...}`` with the same keys less ``laplace`` and ``top_k``: a
seeded uniformly random k of the same eligible pool texts, with the same provenance.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from archsearch.spaces import SpecError
from archsearch.worker._dsir import (
    DEFAULT_BUCKETS,
    DEFAULT_MIN_LENGTH,
    DEFAULT_NGRAMS,
    DsirCache,
    DsirSelection,
    SelectionMethod,
    dsir_select,
    resolve_k,
)
from archsearch.worker._example import GlueExample
from archsearch.worker._selector_base import DataSelector, SelectionPlan
from archsearch.worker._text_pools import source_names

#: The method's settings and their defaults (``pool``/``target``: the training-subset use).
DSIR_DEFAULTS: dict[str, Any] = {
    "pool": "train",
    "target": "dev",
    "ngrams": DEFAULT_NGRAMS,
    "buckets": DEFAULT_BUCKETS,
    "laplace": 0.0,
    "min_length": DEFAULT_MIN_LENGTH,
    "top_k": False,
}
_MAX_NGRAMS = 5
_MAX_BUCKETS = 1 << 24

#: Reads the texts of a source name (own splits, ``glue:``, files).
TextReader = Callable[[str], Sequence[str]]


def check_dsir_options(
    options: Mapping[str, Any], section: str = "data.selection"
) -> dict[str, Any]:
    """``options`` with :data:`DSIR_DEFAULTS` filled in, ``pool`` and ``target`` as lists.

    Raises:
        SpecError: Neither or both of ``k`` and ``fraction``, a value out of range, or a
            source name of no known form; the field is named with ``section``.
    """
    out = {**DSIR_DEFAULTS, **options}
    out.pop("method", None)
    if ("k" in out) == ("fraction" in out):
        raise SpecError(
            section, "dsir needs exactly one of k and fraction", 'e.g. "k": 1000 or "fraction": 0.5'
        )
    if "k" in out and not (isinstance(out["k"], int) and out["k"] >= 1):
        raise SpecError(f"{section}.k", f"must be an int >= 1, got {out['k']!r}")
    if "fraction" in out and not 0 < out["fraction"] <= 1:
        raise SpecError(f"{section}.fraction", f"must be in (0, 1], got {out['fraction']!r}")
    if not 1 <= out["ngrams"] <= _MAX_NGRAMS:
        raise SpecError(
            f"{section}.ngrams",
            f"must be in [1, {_MAX_NGRAMS}], got {out['ngrams']!r}",
            "2 = unigrams and bigrams, as the paper",
        )
    if not 1 <= out["buckets"] <= _MAX_BUCKETS:
        raise SpecError(
            f"{section}.buckets",
            f"must be in [1, {_MAX_BUCKETS}], got {out['buckets']!r}",
            "the paper uses 10000",
        )
    if out["laplace"] < 0:
        raise SpecError(f"{section}.laplace", f"must be >= 0 (a pseudo-count): {out['laplace']}")
    if out["min_length"] < 0:
        raise SpecError(f"{section}.min_length", f"must be >= 0, got {out['min_length']}")
    for key in ("pool", "target"):
        try:
            out[key] = source_names(out[key])
        except ValueError as e:
            raise SpecError(f"{section}.{key}", str(e)) from None
    return out


class DsirSelector(DataSelector):
    """DSIR importance resampling of the training examples (``{"method": "dsir", ...}``).

    The pool is the task's training split; the target is ``target`` (default the task's dev
    text). Needs :attr:`SelectionPlan.texts` to read the target.

    A small target (RTE's 277 dev texts) leaves most of a pool text's bigrams unseen there,
    each weighing log 1e-8, so unsmoothed weights fall with length and short texts win
    (tests/worker/test_dsir.py::test_laplace_smoothing_helps_a_small_target); ``laplace: 1``
    corrects that. The default stays the package's 0.
    """

    name = "dsir"

    def __init__(self, cache: DsirCache | None = None) -> None:
        self.cache = cache
        self.last: DsirSelection | None = None

    @classmethod
    def check_options(cls, options: Mapping[str, Any]) -> dict[str, Any]:
        return check_dsir_options(options)

    def select(
        self, examples: Sequence[GlueExample], plan: SelectionPlan, rng: random.Random
    ) -> list[GlueExample]:
        options = check_dsir_options(plan.options)
        if options["pool"] != ["train"]:
            raise SpecError(
                "data.selection.pool",
                f"{options['pool']}: training examples are selected from the task's own "
                "training split",
                "leave pool out; other pools choose pre-training text (data.pretrain_selection)",
            )
        if plan.texts is None:
            raise ValueError("the dsir selector needs SelectionPlan.texts to read its target")
        pool = [" ".join(e.texts) for e in examples]
        self.last = run_dsir(
            {"train": pool}, options, plan.texts, rng, cache=self.cache, section="data.selection"
        )
        return [examples[i] for i in self.last.indices]

    def provenance(self) -> dict[str, str]:
        if self.last is None:
            return {}
        return {"selection": self.name, **self.last.info("selection")}


def run_dsir(
    pools: Mapping[str, Sequence[str]],
    options: Mapping[str, Any],
    texts: TextReader,
    rng: random.Random,
    *,
    cache: DsirCache | None = None,
    section: str = "data.selection",
    method: SelectionMethod = "dsir",
) -> DsirSelection:
    """DSIR over the named pools (concatenated in order) towards ``options["target"]``.

    ``options`` are checked ones (:func:`check_dsir_options`); the seed is ``options["seed"]``
    or drawn from ``rng`` (the recipe's seed). ``method="random"``: the uniformly random
    selection DSIR's provenance compares against (:func:`~archsearch.worker._dsir.dsir_select`).

    Raises:
        SpecError: The selection cannot be made (too few texts pass ``min_length``, k larger
            than the pool, a target without words); the message says which and the fix.
    """
    pool = [t for texts_ in pools.values() for t in texts_]
    sources = [name for name, texts_ in pools.items() for _ in texts_]
    target = [t for name in options["target"] for t in texts(name)]
    seed = options["seed"] if "seed" in options else rng.randrange(2**31)
    k = resolve_k(options.get("k"), options.get("fraction"), len(pool))
    if k > len(pool):
        raise SpecError(
            f"{section}.k", f"{k} is more than the {len(pool)} texts of the pool", "lower k"
        )
    try:
        return dsir_select(
            pool,
            target,
            k,
            sources=sources,
            ngrams=options["ngrams"],
            buckets=options["buckets"],
            laplace=float(options["laplace"]),
            min_length=options["min_length"],
            top_k=options["top_k"],
            seed=seed,
            cache=cache,
            method=method,
        )
    except ValueError as e:
        raise SpecError(section, str(e)) from e


#: The methods of ``data.pretrain_selection``.
PRETRAIN_METHODS: tuple[SelectionMethod, ...] = ("dsir", "random")
#: Settings only DSIR reads; a ``random`` pre-training selection refuses them.
_DSIR_ONLY = ("laplace", "top_k")


def check_pretrain_selection(
    selection: Mapping[str, Any], section: str = "data.pretrain_selection"
) -> dict[str, Any]:
    """A ``data.pretrain_selection`` (or ``data.distill_selection``: AutoDistil's supernet
    text, ``section``) checked: method ``dsir`` or ``random``, a ``pool`` named, the target
    defaulting to the task's training text; the result keeps ``method``.

    ``random`` takes DSIR's keys (``pool``, ``k``/``fraction``, ``target``, ``ngrams``,
    ``buckets``, ``min_length``, ``seed``: the same eligible texts and the same KL
    provenance) but refuses ``laplace`` and ``top_k``, which only shape DSIR's weights.

    Raises:
        SpecError: Another method, no pool, a DSIR-only setting for random, or a bad
            setting (the field is named).
    """
    method = selection.get("method", "none")
    if method not in PRETRAIN_METHODS:
        raise SpecError(
            f"{section}.method",
            f"{method!r}: this text is selected by 'dsir' or 'random' (its baseline)",
            'e.g. {"method": "dsir", "pool": ["glue:sst2", "glue:qnli/test"], "k": 20000}',
        )
    if "pool" not in selection:
        raise SpecError(
            f"{section}.pool",
            "name the texts to choose from",
            'e.g. ["glue:sst2", "glue:qnli/test", "file:/data/wiki.txt"]',
        )
    if method == "random":
        for key in _DSIR_ONLY:
            if key in selection:
                raise SpecError(
                    f"{section}.{key}",
                    "a DSIR setting: a random selection has no importance weights",
                    f"leave {key} out, or use method 'dsir'",
                )
    return {"method": method, **check_dsir_options({"target": "train", **selection}, section)}


def select_pretrain_texts(
    selection: Mapping[str, Any],
    texts: TextReader,
    seed: int,
    cache: DsirCache | None = None,
    section: str = "data.pretrain_selection",
) -> tuple[list[str], dict[str, str]]:
    """The pre-training texts a ``data.pretrain_selection`` chooses, and their provenance
    (trial info entries ``pretrain_selection_...``; for another ``section``, such as
    ``data.distill_selection``, the entries are named after its last part).

    Args:
        selection: The checked-for-types object (:func:`check_pretrain_selection` runs here).
        texts: Reads a source name's texts.
        seed: The recipe's seed (the Gumbel seed, or the random pick's, unless ``selection``
            gives one).

    Returns:
        The texts in pool order, and ``pretrain_selection`` (the method) with the
        selection's provenance: the same keys for ``dsir`` and ``random``.
    """
    options = check_pretrain_selection(selection, section)
    pools = {name: list(texts(name)) for name in options["pool"]}
    chosen = run_dsir(
        pools,
        options,
        texts,
        random.Random(seed),
        cache=cache,
        section=section,
        method=options["method"],
    )
    pool = [t for texts_ in pools.values() for t in texts_]
    prefix = section.rsplit(".", 1)[-1]
    info = {prefix: options["method"], **chosen.info(prefix)}
    return [pool[i] for i in chosen.indices], info
