"""The GLUE task catalogue shared by the server and the workers."""

from __future__ import annotations

import pytest

from archsearch.spaces import GLUE_TASK_IDS, GLUE_TASKS, canonical_split, get_task


def test_registry_has_all_nine_tasks() -> None:
    assert list(GLUE_TASKS) == [
        "cola",
        "sst2",
        "mrpc",
        "stsb",
        "qqp",
        "mnli",
        "qnli",
        "rte",
        "wnli",
    ]
    assert GLUE_TASKS["mnli"].dev_splits == ("dev_matched", "dev_mismatched")
    assert GLUE_TASKS["stsb"].is_regression and GLUE_TASKS["stsb"].num_labels == 1
    assert GLUE_TASKS["mnli"].num_labels == 3
    assert tuple(GLUE_TASKS) == GLUE_TASK_IDS


def test_get_task_and_canonical_split() -> None:
    assert get_task("rte") is GLUE_TASKS["rte"]
    with pytest.raises(ValueError, match="known tasks: cola"):
        get_task("squad")
    assert canonical_split(GLUE_TASKS["mnli"], "validation_mismatched") == "dev_mismatched"
    assert canonical_split(GLUE_TASKS["rte"], "validation") == "dev"
    with pytest.raises(ValueError, match="known splits: train, dev"):
        canonical_split(GLUE_TASKS["rte"], "test")


def test_importing_the_catalogue_needs_no_torch() -> None:
    import subprocess
    import sys

    code = (
        "import sys, archsearch.spaces\n"
        "assert archsearch.spaces.GLUE_TASKS and archsearch.spaces.validate_custom_task\n"
        "heavy = [m for m in ('torch', 'transformers', 'datasets') if m in sys.modules]\n"
        "assert not heavy, heavy\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr


def test_a_glue_folder_name_for_a_task_names_the_id_meant() -> None:
    """`--task SST-2` (the folder's name) listed the ids without saying which was meant."""
    from archsearch.server._spec import SearchSpec
    from archsearch.spaces import SpecError, get_task

    with pytest.raises(ValueError, match=r"did you mean 'stsb' \(the id of the STS-B folder\)"):
        get_task("STS-B")
    with pytest.raises(SpecError, match=r"did you mean 'sst2' \(the id of the SST-2 folder\)"):
        SearchSpec.from_dict({"name": "x", "space": "bert", "n_trials": 2, "task": "SST-2"})
    with pytest.raises(ValueError) as e:
        get_task("nope")
    assert "did you mean" not in str(e.value)
