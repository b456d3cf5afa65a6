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


def test_labelled_metrics_are_declared_only_when_the_trainer_says_so() -> None:
    """``<metric>@<label>`` (evaluate-many: DyLoRA ranks) counts as declared only for a
    trainer with ``labelled_metrics``, only on a produced metric, and survives the wire."""
    from archsearch.server._trainers import trainer_info_from_pb
    from archsearch.server.client import trainer_info_to_pb
    from archsearch.worker._bert_info import BERT_TRAINER_INFO
    from archsearch.worker._lora_info import LORA_TRAINER_INFO

    data = {"task": "sst2"}
    for name in ("accuracy@r2", "trainable_params@r1", "trainable_params", "sst2.accuracy"):
        assert LORA_TRAINER_INFO.declares(name, data), name
    for name in ("accuracy@", "mcc@r2", "bogus", "@r2"):
        assert not LORA_TRAINER_INFO.declares(name, data), name
    assert BERT_TRAINER_INFO.declares("accuracy", data)
    assert not BERT_TRAINER_INFO.declares("accuracy@r2", data)
    assert trainer_info_from_pb(trainer_info_to_pb(LORA_TRAINER_INFO)) == LORA_TRAINER_INFO
