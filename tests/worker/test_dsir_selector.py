"""The ``dsir`` data selector: its keys' errors, text sources, and the bert trainer training on
(and pre-training on) what DSIR selected, with provenance in the trial's info."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _tiny import TINY_BERT

from archsearch.spaces import PRETRAIN_SELECTION_METHODS, Candidate, SpecError, validate_data
from archsearch.spaces._selection_checks import (
    PRETRAIN_METHODS,
    check_pretrain_selection,
    source_names,
)
from archsearch.worker import CandidateError, TrainContext, load_split
from archsearch.worker._dsir import DSIR_DIR_ENV, DsirCache, dsir_select
from archsearch.worker._dsir_selector import DsirSelector, select_pretrain_texts
from archsearch.worker._pretrain_cache import PRETRAIN_DIR_ENV
from archsearch.worker._selectors import SELECTORS, SelectionPlan, make_selector
from archsearch.worker._text_pools import file_texts, glue_texts, load_texts

SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()


@pytest.fixture(autouse=True)
def dsir_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(DSIR_DIR_ENV, str(tmp_path / "dsir"))  # the trainer's weights on disk


@pytest.mark.parametrize(
    ("selection", "field", "text"),
    [
        ({"method": "dsir"}, "data.selection", "exactly one of k and fraction"),
        ({"method": "dsir", "k": 5, "fraction": 0.5}, "data.selection", "exactly one of k"),
        ({"method": "dsir", "k": 0}, "data.selection.k", "must be an int >= 1"),
        ({"method": "dsir", "fraction": 1.5}, "data.selection.fraction", "must be in (0, 1]"),
        ({"method": "dsir", "k": 5, "ngrams": 0}, "data.selection.ngrams", "must be in [1, 5]"),
        ({"method": "dsir", "k": 5, "buckets": 0}, "data.selection.buckets", "must be in [1,"),
        ({"method": "dsir", "k": 5, "laplace": -1}, "data.selection.laplace", "must be >= 0"),
        ({"method": "dsir", "k": 5, "min_length": -1}, "data.selection.min_length", ">= 0"),
        ({"method": "dsir", "k": 5, "target": "wiki"}, "data.selection.target", "unknown source"),
        ({"method": "dsir", "k": 5, "target": []}, "data.selection.target", "non-empty list"),
        ({"method": "dsir", "k": 5, "target": "glue:xyz"}, "data.selection.target", "xyz"),
        (
            {"method": "dsir", "k": 5, "target": "glue:rte/dev2"},
            "data.selection.target",
            "has no split 'dev2'",
        ),
        (
            {"method": "dsir", "k": 5, "pool": ["dev", "dev"]},
            "data.selection.pool",
            "names a source twice",
        ),
    ],
)
def test_bad_dsir_options_name_the_field(selection: Any, field: str, text: str) -> None:
    """The same check on both sides: the server's (``validate_data``, at launch) and the
    selector's (on the worker, for a candidate from anywhere)."""
    for check in (
        lambda: validate_data({"task": "rte", "selection": selection}),
        lambda: make_selector(selection),
    ):
        with pytest.raises(SpecError) as info:
            check()
        assert info.value.field == field
        assert text in str(info.value)


@pytest.mark.parametrize(
    ("selection", "field", "text"),
    [
        ({"method": "dsir", "k": "5"}, "data.selection.k", "must be int"),
        ({"method": "dsir", "k": True}, "data.selection.k", "must be int"),
        ({"method": "dsir", "k": 5, "bukets": 9}, "data.selection.bukets", "reads buckets"),
        ({"method": "dsir", "k": 5, "top_k": 1}, "data.selection.top_k", "must be bool"),
        ({"method": "dsir", "k": 5, "pool": 3}, "data.selection.pool", "must be str or list"),
    ],
)
def test_dsir_option_types_are_checked_at_launch(selection: Any, field: str, text: str) -> None:
    with pytest.raises(SpecError) as info:
        validate_data({"task": "rte", "selection": selection})
    assert info.value.field == field
    assert text in str(info.value)


def test_dsir_is_a_registered_selector_with_defaults() -> None:
    assert SELECTORS["dsir"] is DsirSelector
    selector, options = make_selector({"method": "dsir", "fraction": 0.5})
    assert isinstance(selector, DsirSelector)
    assert options["pool"] == ["train"] and options["target"] == ["test"]
    assert (options["ngrams"], options["buckets"], options["min_length"]) == (2, 10_000, 1)


def test_the_selector_needs_the_own_training_split_as_pool() -> None:
    selector, options = make_selector({"method": "dsir", "k": 2, "pool": "glue:sst2"})
    plan = SelectionPlan(task="rte", options=options, texts=lambda name: ["a b"])
    with pytest.raises(SpecError, match=r"data\.pretrain_selection"):
        selector.select([], plan, random.Random(0))


def test_text_sources(tmp_path: Path) -> None:
    (tmp_path / "a.txt").write_text("one line\n\n  two  \n")
    (tmp_path / "b.jsonl").write_text('{"text": "x y"}\n\n{"text": "z"}\n')
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{"body": "y"}\n')
    assert load_texts(f"file:{tmp_path / 'a.txt'}") == ["one line", "two"]
    assert load_texts(str(tmp_path / "b.jsonl")) == ["x y", "z"]
    with pytest.raises(ValueError, match=r"bad.jsonl:2: not a JSON object with a 'text'"):
        file_texts(tmp_path / "bad.jsonl")
    with pytest.raises(FileNotFoundError, match="does not exist on this worker"):
        load_texts("file:/no/such.txt")
    rte_test = glue_texts("rte", "test", SHARED_GLUE)  # unlabelled: read by its header
    assert len(rte_test) == 3000 and " " in rte_test[0]
    pairs = load_split("mrpc", "train", SHARED_GLUE)
    assert glue_texts("mrpc", "train", SHARED_GLUE)[0] == " ".join(pairs[0].texts)
    assert source_names("glue:sst2") == ["glue:sst2"]


def _candidate(selection: dict[str, Any], **data: Any) -> Candidate:
    return Candidate.from_dict(
        {
            "space": "bert",
            "architecture": TINY_BERT,
            "recipe": {
                "max_steps": 2,
                "eval_every": 2,
                "batch_size": 8,
                "max_seq_length": 16,
                "seed": 4,
                "measure_latency": False,
            },
            "data": {"task": "rte", "eval_subset": 16, "selection": selection, **data},
        }
    )


def test_trainer_trains_on_the_dsir_selection_and_reports_provenance() -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    selection = {"method": "dsir", "k": 40, "laplace": 1.0, "seed": 11}
    result = trainer.train(_candidate(selection), TrainContext())

    train = load_split("rte", "train", SHARED_GLUE)
    pool = [" ".join(e.texts) for e in train]
    target = glue_texts("rte", "test", SHARED_GLUE)  # the default: never the scoring dev split
    expected = dsir_select(pool, target, 40, laplace=1.0, seed=11, cache=DsirCache())
    encoded = trainer.encode(
        "rte", "train", 0, {"max_seq_length": 16, "seed": 4}, dict(_candidate(selection).data)
    )
    assert len(encoded) == 40
    assert encoded.labels.tolist() == [train[i].label for i in expected.indices]

    info = result.info
    assert info["selection"] == "dsir"
    assert info["selection_ids_hash"] == f"sha256:{expected.ids_hash}"
    assert info["selection_pool_hash"] == f"sha256:{expected.pool_hash}"
    assert info["selection_size"] == "40"
    assert json.loads(info["selection_shares"]) == {"train": 1.0}
    assert float(info["selection_kl_reduction"]) == pytest.approx(expected.kl_reduction, rel=1e-5)
    assert info["selection_cache"] in ("hit", "miss")
    assert json.loads(info["selection_target"]) == ["test"] and info["selection_seed"] == "11"

    # Another k: the weights come from the cache; another data hash.
    again = trainer.train(_candidate({**selection, "k": 20}), TrainContext())
    assert again.info["selection_cache"] == "hit"
    assert again.info["selection_size"] == "20"
    assert again.info["data_hash"] != result.info["data_hash"]
    # No selection: no provenance.
    plain = trainer.train(_candidate({"method": "none"}), TrainContext())
    assert not any(k.startswith("selection") for k in plain.info)


def test_a_text_file_under_home_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Launch took file:~/t.txt as an absolute path; the worker looked for a folder "~"."""
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "t.txt").write_text("one\ntwo\n")
    assert load_texts("file:~/t.txt") == ["one", "two"]


def test_an_edited_target_file_is_read_again(tmp_path: Path) -> None:
    """The worker's split cache was keyed by the selection's text alone: a target file edited
    between two trials (the same path) left the second selecting towards the old text, its
    provenance naming the file."""
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    target = tmp_path / "target.txt"
    train = [" ".join(e.texts) for e in load_split("rte", "train", SHARED_GLUE)]
    target.write_text("\n".join(train[:50]))
    selection = {"method": "dsir", "k": 20, "target": f"file:{target}", "seed": 3}
    recipe = {"max_seq_length": 16, "seed": 4}
    trainer.encode("rte", "train", 0, recipe, dict(_candidate(selection).data))
    first = trainer.splits.selection_info["rte"]["selection_ids_hash"]
    target.write_text("\n".join(train[-50:]) + "\n")  # another text, another size
    trainer.encode("rte", "train", 0, recipe, dict(_candidate(selection).data))
    assert trainer.splits.selection_info["rte"]["selection_ids_hash"] != first


def test_the_scoring_dev_file_is_no_target_even_through_a_link(tmp_path: Path) -> None:
    """The launch check reads names: a link to the dev file (or the file under another
    folder name) trained towards the evaluation text."""
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    link = tmp_path / "target.tsv"
    link.symlink_to(SHARED_GLUE / "RTE" / "dev.tsv")
    data = {"selection": {"method": "dsir", "k": 20, "target": f"file:{link}"}}
    with pytest.raises(CandidateError, match="the rte dev split that scores the trial"):
        trainer.encode("rte", "train", 0, {"max_seq_length": 16, "seed": 4}, data)


def test_trainer_reports_a_selection_it_cannot_make() -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    with pytest.raises(CandidateError, match=r"data.selection.k: 5000 is more than the 2490"):
        trainer.train(_candidate({"method": "dsir", "k": 5000}), TrainContext())
    with pytest.raises(SpecError, match=r"data\.selection: dsir needs exactly one of k"):
        _candidate({"method": "dsir"})  # refused before any trainer sees it (so at launch)
    with pytest.raises(CandidateError, match="does not exist on this worker"):
        trainer.train(
            _candidate({"method": "dsir", "k": 5, "target": "file:/no/such.txt"}), TrainContext()
        )


def test_a_missing_default_target_says_it_is_the_default_and_the_fix(tmp_path: Path) -> None:
    """A GLUE folder with train and dev only failed every trial that left the target out with
    "data selection source 'glue:rte/test': ... not found", a source nobody wrote."""
    import shutil

    from archsearch.worker._bert_trainer import BertTrainer

    (tmp_path / "RTE").mkdir()
    for name in ("train.tsv", "dev.tsv"):
        shutil.copy(SHARED_GLUE / "RTE" / name, tmp_path / "RTE" / name)
    trainer = BertTrainer(glue_dir=str(tmp_path))
    with pytest.raises(CandidateError) as failed:
        trainer.train(_candidate({"method": "dsir", "k": 5}), TrainContext())
    said = str(failed.value)
    assert "data selection source 'test' (the task's unlabelled test text" in said
    assert "data.selection's default target" in said and "name data.selection.target" in said


def test_pretrain_selection_checks() -> None:
    for method in ("none", "uniform"):
        with pytest.raises(SpecError, match=r"data\.pretrain_selection\.method: ") as info:
            check_pretrain_selection({"method": method, "k": 3, "pool": "glue:cola"})
        assert f"{method!r}" in str(info.value)
        assert "'dsir' or 'random'" in str(info.value)
        with pytest.raises(SpecError, match=r"selection\.method: .*\(one of dsir, random\)"):
            validate_data({"pretrain_selection": {"method": method}})
    for method in PRETRAIN_METHODS:
        with pytest.raises(SpecError, match=r"data\.pretrain_selection\.pool: name the texts"):
            check_pretrain_selection({"method": method, "k": 3})
        checked = check_pretrain_selection({"method": method, "k": 3, "pool": "glue:cola"})
        assert checked["target"] == ["train"] and checked["pool"] == ["glue:cola"]
        assert checked["method"] == method
    assert set(PRETRAIN_METHODS) == set(PRETRAIN_SELECTION_METHODS)
    # random reads DSIR's keys (same pools, filter and KL measure) but not its weights' settings
    for key, value in (("laplace", 1.0), ("top_k", True)):
        selection = {"method": "random", "k": 3, "pool": "glue:cola", key: value}
        with pytest.raises(SpecError, match=rf"pretrain_selection\.{key}: a DSIR setting"):
            check_pretrain_selection(selection)
        with pytest.raises(SpecError, match=rf"pretrain_selection\.{key}: unknown field"):
            validate_data({"pretrain_selection": selection})
        check_pretrain_selection({**selection, "method": "dsir"})
    with pytest.raises(SpecError, match=r"pretrain_selection\.k: must be an int >= 1"):
        check_pretrain_selection({"method": "random", "k": 0, "pool": "glue:cola"})
    with pytest.raises(SpecError, match=r"data\.pretrain_selection\.size: unknown field"):
        validate_data({"pretrain_selection": {"method": "random", "size": 3}})
    random_ = {"method": "random", "pool": ["glue:cola"], "fraction": 0.5, "min_length": 3}
    assert validate_data({"pretrain_selection": random_})["pretrain_selection"] == random_
    # data.selection's own random method is unchanged
    with pytest.raises(SpecError, match=r"data\.selection\.size"):
        validate_data({"selection": {"method": "random", "size": 0}})
    with pytest.raises(SpecError, match=r"data\.selection\.pool: unknown field"):
        validate_data({"selection": {"method": "random", "size": 3, "pool": "glue:cola"}})


def test_random_pretrain_selection_is_dsirs_baseline_with_the_same_provenance() -> None:
    pools = {
        "a.txt": [f"the cat number {i} sat on the mat" for i in range(60)] + ["", " "],
        "b.txt": [f"stock prices fell {i} points today" for i in range(40)],
    }
    target = [f"the cat number {i} sat on the mat" for i in range(20)]

    def texts(name: str) -> list[str]:
        return target if name == "train" else pools[name]

    selection = {"pool": ["a.txt", "b.txt"], "k": 30, "seed": 5}
    cache = DsirCache()
    dsir_texts, dsir_info = select_pretrain_texts({"method": "dsir", **selection}, texts, 0, cache)
    rnd_texts, rnd_info = select_pretrain_texts({"method": "random", **selection}, texts, 0, cache)
    assert rnd_info.keys() == dsir_info.keys()
    assert (rnd_info["pretrain_selection"], dsir_info["pretrain_selection"]) == ("random", "dsir")
    assert rnd_info["pretrain_selection_cache"] == "hit"  # the same weights
    assert rnd_info["pretrain_selection_size"] == "30" and len(rnd_texts) == 30
    assert rnd_info["pretrain_selection_eligible"] == "100"
    assert rnd_info["pretrain_selection_kl_reduction"] == "0"
    assert rnd_info["pretrain_selection_kl"] == rnd_info["pretrain_selection_kl_random"]
    assert rnd_info["pretrain_selection_kl_random"] == dsir_info["pretrain_selection_kl_random"]
    assert rnd_info["pretrain_selection_pool_hash"] == dsir_info["pretrain_selection_pool_hash"]
    assert rnd_info["pretrain_selection_ids_hash"] != dsir_info["pretrain_selection_ids_hash"]
    assert json.loads(rnd_info["pretrain_selection_pool_shares"]) == {
        "a.txt": pytest.approx(62 / 102, abs=1e-6),
        "b.txt": pytest.approx(40 / 102, abs=1e-6),
    }
    assert all(t.strip() for t in rnd_texts) and rnd_texts != dsir_texts
    # DSIR leans to the cats; random takes the pool's mix
    assert sum("cat" in t for t in dsir_texts) > sum("cat" in t for t in rnd_texts)
    pool = pools["a.txt"] + pools["b.txt"]
    baseline = dsir_select(pool, target, 30, seed=5, cache=cache, method="random")
    assert rnd_texts == [pool[i] for i in baseline.indices]
    # without a seed of its own, the recipe's seed draws it: the same one for both methods
    unseeded = {"pool": ["a.txt", "b.txt"], "k": 30}
    again, _ = select_pretrain_texts({"method": "random", **unseeded}, texts, 9, cache)
    assert again == select_pretrain_texts({"method": "random", **unseeded}, texts, 9, cache)[0]
    assert again != select_pretrain_texts({"method": "random", **unseeded}, texts, 10, cache)[0]
    seed = random.Random(9).randrange(2**31)
    drawn = dsir_select(pool, target, 30, seed=seed, cache=cache, method="random")
    assert again == [pool[i] for i in drawn.indices]


def _wiki(tmp_path: Path) -> Path:
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("\n".join(f"the history of city number {i} is long ." for i in range(30)))
    return wiki


def _flexibert_spec(wiki: Path, method: str) -> dict[str, Any]:
    """A tiny FlexiBERT candidate pre-training 2 steps on 64 texts of CoLA and ``wiki`` chosen
    by ``method`` towards SST-2's dev text."""
    return {
        "space": "flexibert",
        "architecture": {
            "l": 2,
            "o": ["c", "l"],
            "p": ["5", "dft"],
            "h": [64, 128],
            "n": [2, 2],
            "f": [[128], [64, 128]],
        },
        "recipe": {
            "max_steps": 2,
            "eval_every": 2,
            "batch_size": 8,
            "max_seq_length": 32,
            "seed": 3,
            "measure_latency": False,
            "pretrain_steps": 2,
        },
        "data": {
            "task": "sst2",
            "train_subset": 32,
            "eval_subset": 16,
            "pretrain_selection": {
                "method": method,
                "pool": ["glue:cola", str(wiki)],
                "target": "glue:sst2/dev",
                "k": 64,
            },
        },
    }


def test_flexibert_pretrains_on_dsir_selected_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(tmp_path / "pretrained"))
    wiki = _wiki(tmp_path)
    spec = _flexibert_spec(wiki, "dsir")
    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    result = trainer.train(Candidate.from_dict(spec), TrainContext())
    assert result.metrics["pretrain_steps"] == 2.0
    info = result.info
    assert info["pretrain_selection"] == "dsir" and info["pretrain_selection_size"] == "64"
    shares = json.loads(info["pretrain_selection_shares"])
    assert set(shares) <= {"glue:cola", str(wiki)} and sum(shares.values()) == pytest.approx(1)
    assert json.loads(info["pretrain_selection_pool_shares"])[str(wiki)] == pytest.approx(
        30 / (8551 + 30), abs=1e-6
    )
    # Another selection is another pre-training corpus: not the cached encoder.
    spec["data"]["pretrain_selection"]["k"] = 32
    other = trainer.train(Candidate.from_dict(spec), TrainContext())
    assert other.metrics["pretrain_cached"] == 0.0
    assert other.info["pretrain_selection_cache"] == "hit"

    spec["space"] = "bert"
    spec["architecture"] = TINY_BERT
    with pytest.raises(CandidateError, match="needs space flexibert"):
        trainer.train(Candidate.from_dict(spec), TrainContext())


def test_flexibert_pretrains_on_random_selected_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The baseline through the same path: as many random texts of the same pools, the same
    provenance, and another pre-training corpus than DSIR's (so not DSIR's cached encoder)."""
    from archsearch.worker._bert_trainer import BertTrainer

    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(tmp_path / "pretrained"))
    wiki = _wiki(tmp_path)
    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    result = trainer.train(Candidate.from_dict(_flexibert_spec(wiki, "random")), TrainContext())
    assert result.metrics["pretrain_steps"] == 2.0 and result.metrics["pretrain_cached"] == 0.0
    info = result.info
    assert info["pretrain_selection"] == "random" and info["pretrain_selection_size"] == "64"
    assert info["pretrain_selection_kl_reduction"] == "0"
    assert info["pretrain_selection_kl"] == info["pretrain_selection_kl_random"]
    shares = json.loads(info["pretrain_selection_shares"])
    assert set(shares) <= {"glue:cola", str(wiki)} and sum(shares.values()) == pytest.approx(1)

    dsir = trainer.train(Candidate.from_dict(_flexibert_spec(wiki, "dsir")), TrainContext())
    assert dsir.info["pretrain_selection"] == "dsir"
    assert dsir.metrics["pretrain_cached"] == 0.0  # another corpus: another cache key
    assert dsir.info["pretrain_selection_cache"] == "hit"  # the same DSIR weights
    # the random selection is the very baseline DSIR's provenance compares against
    assert dsir.info["pretrain_selection_kl_random"] == info["pretrain_selection_kl"]
    assert dsir.info["pretrain_selection_ids_hash"] != info["pretrain_selection_ids_hash"]
    assert {k for k in dsir.info if k.startswith("pretrain_selection")} == {
        k for k in info if k.startswith("pretrain_selection")
    }
    again = trainer.train(Candidate.from_dict(_flexibert_spec(wiki, "random")), TrainContext())
    assert again.metrics["pretrain_cached"] == 1.0  # the random corpus's own encoder
    assert again.info["pretrain_selection_ids_hash"] == info["pretrain_selection_ids_hash"]
