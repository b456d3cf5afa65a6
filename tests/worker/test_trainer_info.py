"""Each trainer's declared metadata agrees with its entry point and with what it reports."""

from __future__ import annotations

from archsearch.server._trainers import installed_trainers
from archsearch.worker import trainer_class, trainer_names


def test_every_registered_trainer_is_installed_with_its_own_metadata() -> None:
    installed = {i.name: i for i in installed_trainers()}
    assert set(installed) == set(trainer_names())
    for name in trainer_names():
        assert trainer_class(name).info == installed[name], name


def test_the_bert_metadata_lists_the_trainers_cost_metrics() -> None:
    from archsearch.worker._bert_info import BERT_TRAINER_INFO
    from archsearch.worker._result_metrics import AGGREGATED_COST_METRICS, COST_METRICS

    assert BERT_TRAINER_INFO.cost_metrics[: len(COST_METRICS)] == COST_METRICS
    assert BERT_TRAINER_INFO.multi_task_metrics == AGGREGATED_COST_METRICS
