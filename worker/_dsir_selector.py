"""The ``dsir`` data selector: k training examples (or pre-training texts) towards a target.

``data.selection = {"method": "dsir", "k": 500}`` (or ``"fraction": 0.25``) keeps the k
training examples that importance resampling (:mod:`archsearch.worker._dsir`) picks towards
the task's unlabelled test text; ``target`` names other text instead (never the dev split that
scores the trial: the server refuses it at launch), and ``ngrams``, ``buckets``,
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

import dataclasses
import random
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from archsearch.spaces import SpecError
from archsearch.spaces._selection_checks import (
    check_dsir_options,
    check_pretrain_selection,
)
from archsearch.worker._dsir import (
    DsirCache,
    DsirSelection,
    SelectionMethod,
    dsir_select,
    resolve_k,
)
from archsearch.worker._example import GlueExample
from archsearch.worker._selector_base import DataSelector, SelectionPlan

#: Reads the texts of a source name (own splits, ``glue:``, files).
TextReader = Callable[[str], Sequence[str]]


class DsirSelector(DataSelector):
    """DSIR importance resampling of the training examples (``{"method": "dsir", ...}``).

    The pool is the task's training split; the target is ``target`` (default the task's
    unlabelled test text). Needs :attr:`SelectionPlan.texts` to read the target.

    A small target (RTE's 277 dev texts, say) leaves most of a pool text's bigrams unseen there,
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
        chosen = dsir_select(
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
    return dataclasses.replace(chosen, target=tuple(options["target"]), seed=seed)


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
