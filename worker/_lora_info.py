"""The lora trainer's metadata, torch-free: what a server reads before any worker connects.

:class:`~archsearch.worker._lora_trainer.LoraTrainer` declares it as its ``info``;
pyproject.toml publishes it as the ``lora`` entry point of ``archsearch.trainers``. The
per-rank metrics (``<metric>@r<b>``, ``trainable_params@r<b>``) depend on the candidate's
``recipe.lora.eval_ranks`` and are not declared: a study's objectives name the metrics
declared here, which a trial reports at rank r_max.
"""

from __future__ import annotations

from archsearch.spaces import TrainerInfo
from archsearch.worker._bert_info import BERT_TRAINER_INFO

LORA_TRAINER_INFO = TrainerInfo(
    name="lora",
    description="fine-tunes a pretrained encoder with LoRA or DyLoRA and scores every rank",
    spaces=("lora",),
    task_metrics="glue",
    cost_metrics=(*BERT_TRAINER_INFO.cost_metrics, "trainable_params"),
    multi_task_metrics=BERT_TRAINER_INFO.multi_task_metrics,
    multi_task=True,
    labelled_metrics=True,  # <metric>@r<b> and trainable_params@r<b> for every rank scored
)
