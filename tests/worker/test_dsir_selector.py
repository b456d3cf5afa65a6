"""The ``dsir`` data selector: its keys' errors, text sources, and the bert trainer training on
(and pre-training on) what DSIR selected, with provenance in the trial's info."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
from _tiny import TINY_BERT

from archsearch.spaces import Candidate, SpecError, validate_data
from archsearch.worker import CandidateError, TrainContext, load_split
from archsearch.worker._dsir import DSIR_DIR_ENV, DsirCache, dsir_select
from archsearch.worker._dsir_selector import DsirSelector, check_pretrain_selection
from archsearch.worker._pretrain_cache import PRETRAIN_DIR_ENV
from archsearch.worker._selectors import SELECTORS, SelectionPlan, make_selector
from archsearch.worker._text_pools import file_texts, glue_texts, load_texts, source_names

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
    validate_data({"task": "rte", "selection": selection})  # JSON types are fine
    with pytest.raises(SpecError) as info:
        make_selector(selection)
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
    assert options["pool"] == ["train"] and options["target"] == ["dev"]
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
    target = glue_texts("rte", "dev", SHARED_GLUE)
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

    # Another k: the weights come from the cache; another data hash.
    again = trainer.train(_candidate({**selection, "k": 20}), TrainContext())
    assert again.info["selection_cache"] == "hit"
    assert again.info["selection_size"] == "20"
    assert again.info["data_hash"] != result.info["data_hash"]
    # No selection: no provenance.
    plain = trainer.train(_candidate({"method": "none"}), TrainContext())
    assert not any(k.startswith("selection") for k in plain.info)


def test_trainer_reports_a_selection_it_cannot_make() -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    with pytest.raises(CandidateError, match=r"data.selection.k: 5000 is more than the 2490"):
        trainer.train(_candidate({"method": "dsir", "k": 5000}), TrainContext())
    with pytest.raises(CandidateError, match=r"data\.selection: dsir needs exactly one of k"):
        trainer.train(_candidate({"method": "dsir"}), TrainContext())
    with pytest.raises(CandidateError, match="does not exist on this worker"):
        trainer.train(
            _candidate({"method": "dsir", "k": 5, "target": "file:/no/such.txt"}), TrainContext()
        )


def test_pretrain_selection_checks() -> None:
    with pytest.raises(SpecError, match=r"data\.pretrain_selection\.method: 'random'"):
        check_pretrain_selection({"method": "random", "size": 3})
    with pytest.raises(SpecError, match=r"data\.pretrain_selection\.pool: name the texts"):
        check_pretrain_selection({"method": "dsir", "k": 3})
    checked = check_pretrain_selection({"method": "dsir", "k": 3, "pool": "glue:cola"})
    assert checked["target"] == ["train"] and checked["pool"] == ["glue:cola"]
    with pytest.raises(SpecError, match=r"data\.pretrain_selection\.size"):
        validate_data({"pretrain_selection": {"method": "random", "size": 0}})


def test_flexibert_pretrains_on_dsir_selected_text(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    monkeypatch.setenv(PRETRAIN_DIR_ENV, str(tmp_path / "pretrained"))
    wiki = tmp_path / "wiki.txt"
    wiki.write_text("\n".join(f"the history of city number {i} is long ." for i in range(30)))
    spec = {
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
                "method": "dsir",
                "pool": ["glue:cola", str(wiki)],
                "target": "glue:sst2/dev",
                "k": 64,
            },
        },
    }
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
    spec["data"]["pretrain_selection"]["k"] = 32  # type: ignore[index]
    other = trainer.train(Candidate.from_dict(spec), TrainContext())
    assert other.metrics["pretrain_cached"] == 0.0
    assert other.info["pretrain_selection_cache"] == "hit"

    spec["space"] = "bert"
    spec["architecture"] = TINY_BERT
    with pytest.raises(CandidateError, match="needs space flexibert"):
        trainer.train(Candidate.from_dict(spec), TrainContext())
