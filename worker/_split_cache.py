"""The data stages of the bert trainer: source, selector, tokeniser, with an in-memory cache.

:class:`SplitEncoder` turns (task, split, subset, recipe, data choices) into an
:class:`~archsearch.worker._batches.EncodedSplit`: the examples come from the candidate's
:class:`~archsearch.worker.DataSource`, pass its selector
(:func:`~archsearch.worker._selectors.select_examples`) and the subset slice, and are tokenised.

Imports torch (through ``_batches``) at module level; ``archsearch.worker`` does not import it
eagerly.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from archsearch.spaces import CustomTask, GlueTask, SpecError, get_task
from archsearch.spaces._selection_checks import file_path
from archsearch.worker._batches import EncodedSplit, tokenize_examples
from archsearch.worker._dsir_selector import select_pretrain_texts
from archsearch.worker._example import GlueExample
from archsearch.worker._glue_dir import GlueDataMissing, resolve_glue_dir, split_path
from archsearch.worker._hub import HubUnavailableError
from archsearch.worker._selectors import select_with_provenance
from archsearch.worker._sources import DataSource, choose_source
from archsearch.worker._task_info import Task
from archsearch.worker._text_pools import load_texts
from archsearch.worker._trainer import CandidateError

# Tokenised splits kept; a search usually varies architecture, not data, so a few entries
# cover it while bounding memory when seeds or subsets do vary.
_CACHE_ENTRIES = 8

_CacheKey = tuple[str, str, int, int, int, str, str, str]


class SplitEncoder:
    """Reads, selects and tokenises splits for one worker, caching the last few.

    Args:
        glue_dir: The ``glue_data`` folder as named (None: the defaults of
            :func:`~archsearch.worker.resolve_glue_dir`).
        tokenizer: Returns the tokenizer (loaded on first use).
    """

    def __init__(self, glue_dir: str | Path | None, tokenizer: Callable[[], Any]) -> None:
        self.glue_dir = glue_dir
        self._tokenizer = tokenizer
        self._encoded: OrderedDict[_CacheKey, EncodedSplit] = OrderedDict()
        self._provenance: dict[_CacheKey, dict[str, str]] = {}
        #: The selector's provenance of each task's last encoded training split (trial info;
        #: empty without a selection).
        self.selection_info: dict[str, dict[str, str]] = {}
        #: Each task's last encoded training split's examples, in its order (a curriculum's
        #: difficulties are computed from their texts).
        self.train_examples: dict[str, list[GlueExample]] = {}
        self._examples: dict[_CacheKey, list[GlueExample]] = {}
        #: The provenance of each task's last selected pre-training text.
        self.pretrain_info: dict[str, dict[str, str]] = {}
        #: Custom tasks met in candidates, by name (``data.custom_task``).
        self.custom_tasks: dict[str, CustomTask] = {}

    def __len__(self) -> int:
        """The number of tokenised splits cached."""
        return len(self._encoded)

    def data_source(self, task: GlueTask | CustomTask, data: Mapping[str, Any]) -> DataSource:
        """Where ``task``'s examples come from for a candidate's ``data`` on this worker.

        Raises:
            CandidateError: An unknown source.
            GlueDataMissing: No ``glue_data`` folder here and the hub cannot be used (offline,
                or unreachable), or a named folder is missing: this machine's, not the
                candidate's (another worker may have the data); the message says why.
        """
        try:
            return choose_source(task, data, self.glue_dir)
        except HubUnavailableError as e:  # this machine's: another may have data or the hub
            raise GlueDataMissing(f"data.source {data.get('source', 'auto')!r}: {e}") from e
        except ValueError as e:
            raise CandidateError(f"data.source {data.get('source', 'auto')!r}: {e}") from e

    def encode(
        self,
        task_id: str,
        split: str,
        subset: int,
        recipe: Mapping[str, Any],
        data: Mapping[str, Any] | None = None,
    ) -> EncodedSplit:
        """Tokenises a (subset of a) split, cached per (task, split, subset, length, seed,
        source, selection); see ``BertTrainer.encode``."""
        data = data or {}
        seq_len = recipe["max_seq_length"]
        selection = data.get("selection") if split == "train" else None
        if selection is not None and selection.get("method", "none") == "none":
            selection = None  # identity: the same examples as no selection, one cache entry
        # The whole split (subset 0) without a selection does not depend on the seed: share
        # it across seeds. A dev sample is drawn with the study's data.eval_seed, not the
        # training seed: every candidate and every recipe.seed is scored on the same
        # examples (a candidate without one, from a study launched before it was pinned,
        # draws with its recipe's seed, as that study's first trials did).
        if split == "train":
            seed = recipe["seed"] if subset or selection else 0
        else:
            seed = int(data.get("eval_seed", recipe["seed"])) if subset else 0
        custom = self.custom_tasks.get(task_id)
        task = custom if custom is not None else get_task(task_id)
        source = self.data_source(task, data)
        # a custom task is its whole declaration (labels, files), not its name: two studies
        # may give one name other labels or files, and an edited file is read again
        own = "" if custom is None else _custom_identity(custom, split)
        # a text file the selection reads is stamped too: an edited DSIR target was ignored
        chosen = json.dumps([selection, _file_stamps(selection)])
        key = (task_id, split, subset, seq_len, seed, source.describe(), chosen, own)
        if key in self._encoded:
            self._encoded.move_to_end(key)
            if split == "train":
                self.selection_info[task_id] = self._provenance.get(key, {})
                self.train_examples[task_id] = self._examples.get(key, [])
            return self._encoded[key]
        try:
            examples = source.load(task, split)
        except HubUnavailableError as e:  # the machine's, as a missing folder is
            raise GlueDataMissing(f"data.source {data.get('source', 'auto')!r}: {e}") from e
        try:
            examples, provenance = select_with_provenance(
                examples,
                task=task_id,
                split=split,
                selection=selection,
                subset=subset,
                seed=seed,
                texts=self.text_reader(task, data),
            )
        except (SpecError, FileNotFoundError) as e:
            raise CandidateError(str(e)) from e
        encoded = tokenize_examples(self._tokenizer(), examples, seq_len, task.is_regression)
        self._encoded[key] = encoded
        self._provenance[key] = provenance
        if split == "train":
            self.selection_info[task_id] = provenance
            self._examples[key] = self.train_examples[task_id] = examples
        while len(self._encoded) > _CACHE_ENTRIES:
            oldest = self._encoded.popitem(last=False)[0]
            self._provenance.pop(oldest, None)
            self._examples.pop(oldest, None)
        return encoded

    def pretrain_texts(self, task: Task, data: Mapping[str, Any], seed: int) -> list[str]:
        """The masked-LM pre-training texts ``data.pretrain_selection`` chooses for ``task``
        (:func:`~archsearch.worker._dsir_selector.select_pretrain_texts`); the provenance goes
        to :attr:`pretrain_info`.

        Raises:
            CandidateError: A bad selection or an unreadable source (the message says which).
        """
        try:
            texts, info = select_pretrain_texts(
                data["pretrain_selection"], self.text_reader(task, data), seed
            )
        except SpecError as e:
            raise CandidateError(str(e)) from e
        self.pretrain_info[task.id] = info
        return texts

    def text_reader(self, task: Task, data: Mapping[str, Any]) -> Callable[[str], Sequence[str]]:
        """Reads a source name's texts for a selector
        (:mod:`~archsearch.worker._text_pools`): the task's own labelled splits through its
        data source, everything else (``test``, ``glue:``, files) from disk.

        The reader raises CandidateError for a source it cannot read.
        """

        def read(name: str) -> Sequence[str]:
            asked = name
            try:
                if name in ("train", *task.dev_splits):
                    examples = self.data_source(task, data).load(task, name)
                    return [" ".join(e.texts) for e in examples]
                if name == "test":
                    if isinstance(task, CustomTask):
                        raise ValueError(f"custom task {task.id!r} has no 'test' text source")
                    name = f"glue:{task.id}/test"
                if (path := file_path(name)) is not None:
                    self._refuse_scoring_file(task, name, path)
                return load_texts(name, self.glue_dir)
            except (HubUnavailableError, FileNotFoundError, ValueError) as e:
                if asked == "test":  # the default target since 2026-12-07: say what fixes it
                    raise CandidateError(
                        f"data selection source 'test' (the task's unlabelled test text, "
                        f"{name}; data.selection's default target): {e}; put the GLUE test "
                        "file there, or name data.selection.target (e.g. 'train' or "
                        "'file:PATH')"
                    ) from e
                raise CandidateError(f"data selection source {name!r}: {e}") from e

        return read

    def _refuse_scoring_file(self, task: Task, name: str, given: str) -> None:
        """Refuses source ``name``, the text file ``given``, when it is the task's dev file,
        which scores the trial (a path or a link to it: the launch check knows only names).

        Raises:
            CandidateError: it is.
        """
        path = os.path.expanduser(given)
        if not os.path.exists(path):
            return  # reading it says so
        try:
            if isinstance(task, CustomTask):
                scoring = [task.split_path("dev")]
            else:
                folder = resolve_glue_dir(None if self.glue_dir is None else str(self.glue_dir))[0]
                scoring = [split_path(task.id, s, folder) for s in task.dev_splits]
        except (OSError, ValueError):
            return
        for dev in scoring:
            with contextlib.suppress(OSError):
                if os.path.samefile(path, dev):
                    raise CandidateError(
                        f"data selection source {name!r} is {dev}, the {task.id} dev split that "
                        "scores the trial: selecting training data by it leaks the evaluation "
                        "set into the score; name other text"
                    )


def data_hash(splits: Mapping[str, Mapping[str, EncodedSplit]]) -> str:
    """One digest of every split of every task, named: the exact tokens and labels used."""
    h = hashlib.sha256()
    for task_id, by_split in splits.items():
        for split, encoded in by_split.items():
            h.update(f"{task_id}/{split}:{encoded.digest}\n".encode())
    return f"sha256:{h.hexdigest()[:16]}"


def dev_hash(splits: Mapping[str, Mapping[str, EncodedSplit]]) -> str:
    """:func:`data_hash` of the splits a trial is scored on (every split but ``train``): one
    study's trials share it unless a dev file changed or workers read different copies."""
    return data_hash({t: {s: e for s, e in by.items() if s != "train"} for t, by in splits.items()})


def _file_stamps(selection: Mapping[str, Any] | None) -> list[list[Any]]:
    """Each text file a selection's pool or target names, with its size and modification
    time (None when it cannot be read: reading it says why)."""
    if not selection:
        return []
    names: list[Any] = []
    for key in ("pool", "target"):
        value = selection.get(key)
        names += value if isinstance(value, list) else [value]
    stamps: list[list[Any]] = []
    for name in names:
        if (path := file_path(name)) is not None:
            try:
                stat = Path(path).expanduser().stat()
                stamps.append([name, stat.st_mtime_ns, stat.st_size])
            except (OSError, RuntimeError, ValueError):  # a ~user unknown here, a NUL byte
                stamps.append([name, None])
    return stamps


def _custom_identity(task: CustomTask, split: str) -> str:
    """A custom task's declaration and its ``split`` file's size and modification time."""
    try:
        stat = task.split_path(split).stat()
        stamp: list[int] | None = [stat.st_mtime_ns, stat.st_size]
    except (OSError, ValueError):
        stamp = None  # reading it says why
    return json.dumps({**task.to_dict(), "file": stamp}, sort_keys=True)
