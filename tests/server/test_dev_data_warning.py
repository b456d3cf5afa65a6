"""``show`` warns when a study's trials were scored on different dev data (a dev file edited
during the study, or workers reading different copies): their scores do not compare."""

from __future__ import annotations

import json

from archsearch.server._format_notes import dev_data_warning
from archsearch.v1 import archsearch_pb2 as pb


def _trial(number: int, digest: str, length: int = 64, repeat_of: int = -1) -> pb.Trial:
    candidate = {"recipe": {"max_seq_length": length}}
    return pb.Trial(
        number=number,
        state=pb.COMPLETE,
        values=[0.5],
        candidate_json=json.dumps(candidate),
        info={"dev_hash": digest},
        duplicate_of=repeat_of,
    )


def test_trials_scored_on_other_dev_data_are_named() -> None:
    trials = [_trial(0, "sha256:a"), _trial(1, "sha256:a"), _trial(2, "sha256:b")]
    line = dev_data_warning(trials)
    assert "scored on different dev data (#0, #1 vs #2)" in line
    assert "do not compare" in line


def test_one_dev_sample_or_other_lengths_say_nothing() -> None:
    assert dev_data_warning([_trial(0, "sha256:a"), _trial(1, "sha256:a")]) == ""
    # another max_seq_length truncates other tokens: not a different dev file
    assert dev_data_warning([_trial(0, "sha256:a"), _trial(1, "sha256:b", length=128)]) == ""
    # a repeat carries its original's result (and info): not counted
    assert dev_data_warning([_trial(0, "sha256:a"), _trial(1, "sha256:b", repeat_of=0)]) == ""
    failed = _trial(1, "sha256:b")
    failed.state = pb.FAIL
    assert dev_data_warning([_trial(0, "sha256:a"), failed]) == ""
