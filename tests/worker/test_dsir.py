"""DSIR core (worker/_dsir.py) against the ``data-selection`` package it reimplements."""

from __future__ import annotations

import copy
import json
import sys
from pathlib import Path

import numpy as np
import pytest

from archsearch.worker._dsir import (
    DsirCache,
    HashedNgrams,
    dsir_select,
    fit_importance,
    gumbel_top_k,
    select_texts,
    tokenize,
)
from archsearch.worker._text_pools import glue_texts

SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()

data_selection = pytest.importorskip("data_selection")
from data_selection import HashedNgramDSIR  # noqa: E402
from data_selection.hashed_ngram_dsir import get_ngram_counts  # noqa: E402


@pytest.fixture(scope="module")
def texts() -> tuple[list[str], list[str]]:
    """A mixed GLUE pool (CoLA, RTE, SST-2) and an RTE dev target: seconds for the package."""
    pool = (
        glue_texts("cola", "train", SHARED_GLUE)[:1500]
        + glue_texts("rte", "train", SHARED_GLUE)[:800]
        + glue_texts("sst2", "dev", SHARED_GLUE)
    )
    return pool, glue_texts("rte", "dev", SHARED_GLUE)


@pytest.fixture(scope="module")
def package(
    tmp_path_factory: pytest.TempPathFactory, texts: tuple[list[str], list[str]]
) -> tuple[HashedNgramDSIR, np.ndarray]:
    """The package fitted on :func:`texts`, and its log importance weights (computed once)."""
    dsir = _package(tmp_path_factory.mktemp("package"), *texts)
    return dsir, _package_weights(dsir)


def _package(tmp: Path, pool: list[str], target: list[str], **kwargs: object) -> HashedNgramDSIR:
    """The package's DSIR on jsonl copies of the texts, one process (file order kept)."""
    for name, rows in (("pool", pool), ("target", target)):
        with (tmp / f"{name}.jsonl").open("w") as f:
            f.writelines(json.dumps({"text": t}) + "\n" for t in rows)
    options = {"num_proc": 1, "min_example_length": 1, **kwargs}
    dsir = HashedNgramDSIR(
        [str(tmp / "pool.jsonl")], [str(tmp / "target.jsonl")], str(tmp / "cache"), **options
    )
    dsir.fit_importance_estimator(num_tokens_to_fit="all")
    return dsir


def _package_weights(dsir: HashedNgramDSIR) -> np.ndarray:
    dsir.compute_importance_weights()
    return np.load(Path(dsir.cache_dir) / "log_importance_weights" / "0.npy")


def test_features_equal_the_packages(texts: tuple[list[str], list[str]]) -> None:
    pool, _ = texts
    odd = ["PrzekrÃ³j x³ 4fun.tv -- don't", "", "Ünïcode ‘quotes’ … 3.88$"]
    for ngrams, buckets in ((2, 10_000), (1, 97), (3, 5_000)):
        feats = HashedNgrams(ngrams, buckets).features(odd + pool[:300])
        for i, text in enumerate(odd + pool[:300]):
            mine = np.bincount(
                feats.indices[feats.offsets[i] : feats.offsets[i + 1]], minlength=buckets
            )
            theirs = get_ngram_counts(text, n=ngrams, num_buckets=buckets)
            assert (mine == theirs).all(), text


def test_importance_weights_equal_the_packages(
    package: tuple[HashedNgramDSIR, np.ndarray], texts: tuple[list[str], list[str]]
) -> None:
    pool, target = texts
    dsir, theirs = package
    weights, hit = DsirCache().weights(pool, target)
    assert not hit
    np.testing.assert_allclose(weights.raw_probs, dsir.raw_probs, rtol=0, atol=1e-15)
    np.testing.assert_allclose(weights.target_probs, dsir.target_probs, rtol=0, atol=1e-15)
    assert theirs.shape == weights.log_weights.shape
    np.testing.assert_allclose(weights.log_weights, theirs, rtol=1e-12, atol=1e-9)


def test_laplace_smoothing_equals_the_upstream_formula(
    package: tuple[HashedNgramDSIR, np.ndarray], texts: tuple[list[str], list[str]]
) -> None:
    """``data-selection`` 1.0.3 predates ``target_laplace_smoothing``; upstream adds the
    pseudo-count to every target bucket before normalising. The package's own featuriser
    and estimator weigh the pool once its target distribution is set that way."""
    pool, target = texts
    dsir = copy.copy(package[0])
    counts = sum(get_ngram_counts(t) for t in target) + 0.5
    dsir.target_probs = counts / counts.sum()
    dsir.log_diff = np.log(dsir.target_probs + 1e-8) - np.log(dsir.raw_probs + 1e-8)
    theirs = [dsir.importance_estimator(dsir.featurizer(t)) for t in pool[::4]]
    weights, _ = DsirCache().weights(pool, target, laplace=0.5)
    np.testing.assert_allclose(weights.target_probs, dsir.target_probs, rtol=1e-12)
    np.testing.assert_allclose(weights.log_weights[::4], theirs, atol=1e-9)
    unsmoothed, _ = DsirCache().weights(pool, target)
    assert not np.allclose(unsmoothed.log_weights, weights.log_weights)


def test_gumbel_top_k_picks_the_packages_examples_for_a_seed(
    tmp_path: Path,
    package: tuple[HashedNgramDSIR, np.ndarray],
    texts: tuple[list[str], list[str]],
) -> None:
    pool, target = texts
    np.random.seed(7)
    package[0].resample(str(tmp_path / "out"), num_to_sample=300)
    lines = (tmp_path / "out" / "0.jsonl").read_text().splitlines()
    theirs = {json.loads(line)["text"] for line in lines}
    assert set(select_texts(pool, target, 300, seed=7)) == theirs


def test_gumbel_top_k_is_reproducible_with_a_seed() -> None:
    log_w = np.random.default_rng(0).normal(size=2_000)
    first = gumbel_top_k(log_w, 100, seed=3)
    assert (gumbel_top_k(log_w, 100, seed=3) == first).all()
    assert not (gumbel_top_k(log_w, 100, seed=4) == first).all()
    assert len(set(first.tolist())) == 100 and (np.diff(first) > 0).all()
    # top_k: no noise, the heaviest items whatever the seed
    heaviest = np.sort(np.argsort(-log_w)[:100])
    assert (gumbel_top_k(log_w, 100, seed=9, top_k=True) == heaviest).all()
    eligible = np.arange(2_000) % 2 == 0
    assert (gumbel_top_k(log_w, 50, eligible=eligible, seed=1) % 2 == 0).all()


def test_sampling_follows_the_weights() -> None:
    """Gumbel top-1 draws item i with probability w_i / sum(w)."""
    log_w = np.log(np.array([0.6, 0.3, 0.1]))
    draws = np.bincount([int(gumbel_top_k(log_w, 1, seed=s)[0]) for s in range(3_000)])
    np.testing.assert_allclose(draws / 3_000, [0.6, 0.3, 0.1], atol=0.03)


def test_package_default_min_length_drops_every_glue_sentence(tmp_path: Path) -> None:
    """The pitfall: ``min_example_length=100`` keeps no SST-2 sentence, so the package's
    resample has nothing to draw from; the default here (1) keeps every non-empty one, and
    asking for 100 says why nothing is left."""
    pool = glue_texts("sst2", "dev", SHARED_GLUE)
    target = glue_texts("sst2", "train", SHARED_GLUE)[:500]
    package = _package(tmp_path, pool, target, min_example_length=100)
    package.compute_importance_weights()
    meta = np.load(Path(package.perexample_metadata_dir) / "0.npy")
    assert package.perexample_metadata_filter(meta).sum() == 0
    assert len(dsir_select(pool, target, 100).indices) == 100
    with pytest.raises(ValueError, match=r"only 0 of 872 .* min_length of 100 drops"):
        dsir_select(pool, target, 100, min_length=100)


def test_empty_texts_are_never_selected() -> None:
    pool = ["", "a cat sat", "  ", "a dog ran", "the cat"]
    chosen = dsir_select(pool, ["the cat sat"], 3, cache=DsirCache()).indices
    assert sorted(chosen.tolist()) == [1, 3, 4]
    with pytest.raises(ValueError, match="only 3 of 5 pool texts"):
        dsir_select(pool, ["the cat sat"], 4, cache=DsirCache())


def test_random_method_selects_the_baseline_dsir_compares_against(
    texts: tuple[list[str], list[str]],
) -> None:
    """``method="random"``: k eligible texts uniformly at random, by seed; with DSIR's seed
    exactly the selection DSIR's ``kl_random`` is measured on, from the same cached weights."""
    pool, target = texts
    pool = [*pool, "", "  "]  # two texts no selection may take
    sources = ["cola"] * 1500 + ["rte"] * 800 + ["sst2"] * (len(pool) - 2300)
    cache = DsirCache()
    dsir = dsir_select(pool, target, 300, sources=sources, seed=7, cache=cache)
    rnd = dsir_select(pool, target, 300, sources=sources, seed=7, cache=cache, method="random")
    assert rnd.cache_hit and (cache.hits, cache.misses) == (1, 1)
    eligible = cache.weights(pool, target)[0].eligible(1)
    baseline = np.sort(np.random.default_rng(7).choice(np.flatnonzero(eligible), 300, False))
    np.testing.assert_array_equal(rnd.indices, baseline)
    assert len(set(rnd.indices.tolist())) == 300 and eligible[rnd.indices].all()
    assert rnd.ids_hash != dsir.ids_hash and set(rnd.indices) != set(dsir.indices)
    assert rnd.pool_hash == dsir.pool_hash and rnd.eligible == dsir.eligible == len(pool) - 2
    # its KL is DSIR's kl_random: the same measure, and no reduction against itself
    assert rnd.kl_selected == rnd.kl_random == dsir.kl_random and rnd.kl_reduction == 0
    assert rnd.pool_shares == dsir.pool_shares
    assert rnd.shares["rte"] == pytest.approx(800 / len(pool), abs=0.06)  # the pool's share
    info = rnd.info("pretrain_selection")
    assert info.keys() == dsir.info("pretrain_selection").keys()
    assert info["pretrain_selection_kl_reduction"] == "0"
    # deterministic by seed
    again = dsir_select(pool, target, 300, seed=7, cache=cache, method="random")
    np.testing.assert_array_equal(again.indices, rnd.indices)
    other = dsir_select(pool, target, 300, seed=8, cache=cache, method="random")
    assert other.ids_hash != rnd.ids_hash
    with pytest.raises(ValueError, match="top_k is a DSIR setting"):
        dsir_select(pool, target, 3, top_k=True, cache=cache, method="random")
    with pytest.raises(ValueError, match="'dsir' or 'random', got 'uniform'"):
        dsir_select(pool, target, 3, cache=cache, method="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match=f"only {len(pool) - 2} of {len(pool)} pool texts"):
        dsir_select(pool, target, len(pool) - 1, cache=cache, method="random")


def test_a_second_selection_with_another_k_is_a_cache_hit(
    texts: tuple[list[str], list[str]],
) -> None:
    pool, target = texts
    cache = DsirCache()
    first = dsir_select(pool, target, 200, cache=cache)
    second = dsir_select(list(pool), list(target), 50, seed=5, cache=cache)  # equal copies
    assert (first.cache_hit, second.cache_hit) == (False, True)
    assert (cache.hits, cache.misses) == (1, 1)
    assert first.pool_hash == second.pool_hash and first.ids_hash != second.ids_hash
    # the features are part of the key
    assert not dsir_select(pool, target, 50, buckets=1000, cache=cache).cache_hit
    assert not dsir_select(pool, target, 50, laplace=1.0, cache=cache).cache_hit


def test_weights_on_disk_serve_another_process(
    tmp_path: Path, texts: tuple[list[str], list[str]]
) -> None:
    pool, target = texts
    first, hit = DsirCache(disk=tmp_path).weights(pool, target)
    assert not hit and len(list(tmp_path.glob("*.npz"))) == 1
    second, hit = DsirCache(disk=tmp_path).weights(pool, target)  # a fresh, empty memory
    assert hit
    np.testing.assert_array_equal(second.log_weights, first.log_weights)
    np.testing.assert_array_equal(second.pool.indices, first.pool.indices)
    assert not DsirCache(disk=tmp_path).weights(pool, target, laplace=1.0)[1]
    for path in tmp_path.glob("*.npz"):  # a damaged file is fitted again
        path.write_bytes(b"not an npz")
    assert not DsirCache(disk=tmp_path).weights(pool, target)[1]
    assert DsirCache(disk=tmp_path).weights(pool, target)[1]


def test_provenance_shares_and_kl(texts: tuple[list[str], list[str]]) -> None:
    pool, _ = texts
    target = glue_texts("rte", "test", SHARED_GLUE)  # 3,000 unlabelled RTE texts
    sources = ["cola"] * 1500 + ["rte"] * 800 + ["sst2"] * (len(pool) - 2300)
    chosen = dsir_select(pool, target, 400, sources=sources, seed=1, cache=DsirCache())
    assert chosen.pool_shares["rte"] == pytest.approx(800 / len(pool), abs=1e-6)
    # RTE text is a quarter of the pool and most of the selection
    assert chosen.shares["rte"] > 0.6
    assert chosen.kl_selected < chosen.kl_random and chosen.kl_reduction > 0
    info = chosen.info()
    assert json.loads(info["selection_shares"]) == chosen.shares
    assert info["selection_cache"] == "miss" and info["selection_size"] == "400"
    assert info["selection_pool_hash"].startswith("sha256:")


def test_laplace_smoothing_helps_a_small_target(texts: tuple[list[str], list[str]]) -> None:
    """With RTE's 277 dev texts as the target most pool bigrams are unseen there
    (log 1e-8 each), so unsmoothed weights fall with length and short CoLA sentences win;
    a pseudo-count of 1 lets the long RTE texts through."""
    pool, target = texts
    sources = ["cola"] * 1500 + ["rte"] * 800 + ["sst2"] * (len(pool) - 2300)
    plain = dsir_select(pool, target, 400, sources=sources, seed=1, cache=DsirCache())
    smoothed = dsir_select(pool, target, 400, sources=sources, seed=1, laplace=1.0)
    assert plain.shares["rte"] < 0.2 < smoothed.shares["rte"]
    assert smoothed.kl_reduction > 0


def test_weights_need_words_on_both_sides() -> None:
    features = HashedNgrams().features(["a b"])
    empty = HashedNgrams().features(["", "  "])
    with pytest.raises(ValueError, match="target texts hold no word"):
        fit_importance(features, empty)
    with pytest.raises(ValueError, match="same ngrams and buckets"):
        fit_importance(features, HashedNgrams(1).features(["a"]))
    assert tokenize("Don't STOP-now!") == ["don", "'", "t", "stop", "-", "now", "!"]


def test_the_core_imports_no_torch() -> None:
    import subprocess

    code = (
        "import sys; import archsearch.worker._dsir, archsearch.worker._text_pools; "
        "print('torch' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
