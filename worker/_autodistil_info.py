"""The autodistil trainer's metadata, torch-free: what a server reads before any worker connects.

:class:`~archsearch.worker._autodistil_trainer.AutodistilTrainer` declares it as its ``info``;
pyproject.toml publishes it as the ``autodistil`` entry point of ``archsearch.trainers``. It does
three job kinds (``supernet``, ``rank``, ``train``). A ``train`` job reports what the bert trainer
reports (declared here); ``relation_loss`` (a ``supernet`` job's) and ``teacher_relation_loss``
are declared as trial metrics so that the ``rank`` job's per-student metrics
(``relation_loss@<key>``, ``accuracy@<key>``, ``params@<key>``, ``flops@<key>``,
``teacher_relation_loss@<key>``) are declared labelled metrics.
"""

from __future__ import annotations

from archsearch.spaces import TrainerInfo
from archsearch.worker._bert_info import BERT_TRAINER_INFO

#: Job kinds of the autodistil trainer (``Candidate.kind``).
AUTODISTIL_KINDS = ("supernet", "rank", "train")
#: The fine-tuned classifier's measured costs a trained student reports beside the cost model's.
CLASSIFIER_COSTS = ("classifier_params", "classifier_flops")

AUTODISTIL_TRAINER_INFO = TrainerInfo(
    name="autodistil",
    description=(
        "AutoDistil: trains sub-space supernets by relation distillation, ranks every student, "
        "fine-tunes chosen students"
    ),
    task_metrics="glue",
    spaces=("autodistil",),
    # reported by supernet jobs (relation_loss) and, per student, by rank jobs (@<key>)
    metrics=("relation_loss", "teacher_relation_loss"),
    # a trained student's params/flops are the shared cost model's (as its proxy row's); the
    # fine-tuned classifier's own (its head included) are classifier_params/classifier_flops
    cost_metrics=(*BERT_TRAINER_INFO.cost_metrics, *CLASSIFIER_COSTS),
    multi_task_metrics=(*BERT_TRAINER_INFO.multi_task_metrics, *CLASSIFIER_COSTS),
    multi_task=True,
    labelled_metrics=True,
)
