"""The worker-side registries: trainers by name, model factories by space."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest
from _tiny import TINY_BERT

from archsearch.spaces import Candidate, bert_parameter_count, get_task
from archsearch.worker import CandidateError, TrainContext, Trainer, TrainResult
from archsearch.worker._models import MODEL_FACTORIES, ModelFactory, model_factory
from archsearch.worker._registry import (
    TRAINERS,
    create_trainer,
    register_trainer,
    trainer_class,
    trainer_names,
)


def test_built_in_trainers_are_registered_where_they_live() -> None:
    from archsearch.worker import BertTrainer, TableTrainer

    assert trainer_class("table") is TableTrainer
    assert trainer_class("bert") is BertTrainer
    assert {"bert", "table"} <= set(trainer_names())


def test_unknown_trainer_names_the_known_ones() -> None:
    with pytest.raises(KeyError, match=r"unknown trainer 'nope': use one of .*bert.*table"):
        trainer_class("nope")


def test_create_trainer_reads_each_trainers_own_options() -> None:
    with pytest.raises(ValueError, match="--trainer table needs --table PATH"):
        create_trainer("table", {"glue_dir": None})
    bert = create_trainer("bert", {"glue_dir": "/work/shared/data/glue", "table": None})
    assert bert.name == "bert" and str(bert.glue_dir) == "/work/shared/data/glue"  # type: ignore[attr-defined]


def test_a_new_trainer_registers_with_one_decorator() -> None:
    @register_trainer
    class EchoTrainer(Trainer):
        name = "echo-test"

        def __init__(self, value: float = 1.0) -> None:
            self.value = value

        @classmethod
        def from_options(cls, options: Mapping[str, Any]) -> EchoTrainer:
            return cls(float(options.get("value", 1.0)))

        def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
            return TrainResult(metrics={"score": self.value})

    try:
        trainer = create_trainer("echo-test", {"value": 0.25})
        assert isinstance(trainer, EchoTrainer) and trainer.value == 0.25
        with pytest.raises(ValueError, match="already registered"):

            @register_trainer
            class Other(Trainer):
                name = "echo-test"

                def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
                    raise NotImplementedError
    finally:
        TRAINERS.unregister("echo-test")


def test_model_factories_by_space() -> None:
    assert {"bert", "flexibert", "flexibert-small"} <= set(MODEL_FACTORIES)
    assert isinstance(model_factory("bert"), ModelFactory)

    class Tokenizer:
        pad_token_id = 0

        def __len__(self) -> int:
            return 30522

    bert = model_factory("bert").build(TINY_BERT, get_task("stsb"), Tokenizer())
    assert sum(p.numel() for p in bert.parameters()) == bert_parameter_count(
        TINY_BERT, num_labels=1
    )
    with pytest.raises(CandidateError, match="no model factory for space 'nas-bench'"):
        model_factory("nas-bench")


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--trainer", "nope"], "unknown trainer 'nope': use one of autodistil, bert, lora, table"),
        (["--trainer", "table"], "--trainer table needs --table PATH"),
    ],
)
def test_worker_command_builds_trainers_from_the_registry(
    argv: list[str], message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    from archsearch.server import cli

    # --server points nowhere: trainers are built before any RPC.
    assert cli.main(["worker", "--server", "127.0.0.1:1", *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith(f"archsearch: {message}") and len(err.strip().splitlines()) == 1


def test_a_plugin_cannot_take_a_built_in_name_or_an_invalid_one() -> None:
    """A plugin named "table" registered, and every later look-up of a built-in trainer
    failed ("'table' is already registered") when its module was imported."""

    def train(self: Trainer, candidate: Candidate, context: TrainContext) -> TrainResult:
        raise NotImplementedError

    for name, says in [("table", "archsearch's own trainer"), ("Bad Name", "invalid trainer")]:
        mine = type("Mine", (Trainer,), {"name": name, "train": train})
        with pytest.raises(ValueError, match=says):
            register_trainer(mine)

    class Shadow(Trainer):
        name = "bert"

        def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
            raise NotImplementedError

    with pytest.raises(ValueError, match="'bert' is the name of archsearch's own trainer"):
        register_trainer(Shadow)
    assert trainer_class("bert").__module__ == "archsearch.worker._bert_trainer"
    with pytest.raises(KeyError, match="install a plugin that publishes it"):
        trainer_class("nosuch")


def test_a_trainer_that_fails_to_start_is_one_line_saying_where(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A plugin trainer whose constructor raised printed a traceback from `archsearch worker`;
    a NameError in it said nowhere where it was."""
    from archsearch.server import cli

    @register_trainer
    class Broken(Trainer):
        name = "broken-test"

        @classmethod
        def from_options(cls, options: Mapping[str, Any]) -> Broken:
            return undefined_name  # type: ignore[name-defined]  # noqa: F821

        def train(self, candidate: Candidate, context: TrainContext) -> TrainResult:
            raise NotImplementedError

    try:
        argv = ["worker", "--trainer", "broken-test", "--server", "127.0.0.1:9"]
        assert cli.main(argv) == 2
    finally:
        TRAINERS.unregister("broken-test")
    err = capsys.readouterr().err
    assert err.startswith("archsearch: trainer 'broken-test' failed to start: NameError: ")
    assert "test_registry.py:" in err and "Traceback" not in err and len(err.splitlines()) == 1
