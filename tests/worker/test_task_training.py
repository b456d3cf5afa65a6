"""What one task's training says of its model besides the metrics (``worker/_task_training.py``)."""

from __future__ import annotations

import numpy as np

from archsearch.worker._task_training import _one_answer


def test_a_model_that_gives_one_answer_is_said() -> None:
    """Every trial of a data search scored 0.5092 (always the positive class) and nothing said
    the models had learned nothing."""
    said = _one_answer(np.array([1, 1, 1, 1]), regression=False)
    assert said.startswith("every one of the 4 dev examples got class 1: the model predicts")
    assert _one_answer(np.array([1, 0, 1]), regression=False) == ""
    # a class with a name is said by it ("got class 4" meant nothing to whoever named it)
    named = _one_answer(np.array([1, 1]), False, None, ("ham", "spam"))
    assert named.startswith("every one of the 2 dev examples got class 'spam': the model")
    assert "got class 1:" in _one_answer(np.array([1, 1]), False, None, ("0", "1"))  # sst2
    gold = np.array([0.0, 5.0, 2.0, 3.0])  # STS-B's range
    near = np.array([2.51, 2.52, 2.515, 2.53])  # an untrained head: never exactly constant
    assert "about one score (2.51 to 2.53)" in _one_answer(near, True, gold)
    assert _one_answer(np.array([1.0, 4.0, 2.0, 3.0]), True, gold) == ""
    assert _one_answer(np.array([1]), regression=False) == ""  # one example says nothing
