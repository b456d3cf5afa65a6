"""Checks of a candidate's ``data.curriculum``: which training examples each epoch sees.

``{"method": "none"}`` (the default) trains on every example each epoch. The other methods
(implemented in ``worker/_curriculum.py``):

* ``"pudf"``: PUDF (IRT-AC + DDS-MAE). Item difficulties (``difficulty: "irt"``) come from a
  1PL fit over an artificial crowd's answers on every training item, the crowd being fitted on
  other folds of the training split (``crowd_fit: "cross-fit"``; never the dev split, which
  scores the candidate). Each epoch the model's ability is estimated on a held-out
  ``val_fraction`` of the training split (``num_obs`` answers sampled), and the epoch trains on
  the items no harder than it (``scheduler: "dds-mae"``), at least ``min_examples``; when the
  ability does not rise, the bound rises by ``stall_step``.
* ``"competency"``: the competency curricula of Platanios et al. (NAACL 2019): ``scheduler``
  ``"linear"`` or ``"root"``, competency from ``c0`` to 1 over the first ``duration`` of
  ``recipe.max_steps``, on a ``difficulty`` of ``"length"`` (tokens), ``"rarity"`` (negative
  mean log word frequency) or ``"irt"`` (the crowd's, as above: PUDF's IRT + root ablation).

The crowd (``crowd``: a list of subjects, each trained on the other folds and answering one):

* ``"tfidf-lr:<C>"`` or ``"tfidf-lr:<C>:<fraction>"``: a TF-IDF logistic regression of inverse
  regularisation strength C, trained on that fraction of the other folds (cheap: the default
  crowd is 8 of them).
* ``"bert:<layers>x<hidden>:<steps>"``, e.g. ``"bert:1x32:200"``: a tiny BERT classifier
  (``layers`` 1-4, ``hidden`` 16-256 and divisible by its 2 heads) trained from scratch for
  ``steps`` (1-5000) AdamW steps on the other folds (``worker/_crowd_students.py``). Students of
  one architecture at several step counts give the crowd its spread of abilities, as the
  paper's models at several epochs do; they share the initialisation and batch order, so a
  ``:200`` subject is the ``:1000`` one's model after 200 steps (one training per fold and
  architecture). Seconds to minutes on a CPU, where TF-IDF subjects take milliseconds.

``crowd_trials: N`` (0-64; default 0, off) adds the study's own trials to the crowd: each
trial with it records its trained model's answers on every training item (in-sample: the
items it trained on) as an artifact, and a later trial's crowd takes the answers of up to N
of the study's lowest-numbered trials that recorded them, beside the subjects above
(``worker/_trial_crowd.py``; on a worker connected to a server only).

This module checks keys, types and values, so a bad curriculum is refused when a study is
launched; the server and the worker both call :func:`validate_curriculum`.
"""

from __future__ import annotations

import math
import re
from typing import Any, NamedTuple

from archsearch.spaces._errors import SpecError

SECTION = "data.curriculum"
METHODS = ("none", "pudf", "competency")
DIFFICULTIES = ("irt", "length", "rarity")
SCHEDULERS = ("dds-mae", "linear", "root")
#: The crowd's subject kinds: ``"tfidf-lr:<C>"`` or ``"tfidf-lr:<C>:<fraction>"`` (a TF-IDF
#: logistic regression of inverse regularisation strength C, trained on that fraction of the
#: other folds), and ``"bert:<layers>x<hidden>:<steps>"`` (a tiny BERT student trained from
#: scratch for that many steps on the other folds).
SUBJECT_KINDS = ("tfidf-lr", "bert")
#: A student's bounds (it stays tiny): layers, hidden width, attention heads, steps.
STUDENT_LAYERS = (1, 4)
STUDENT_HIDDEN = (16, 256)
STUDENT_HEADS = 2
STUDENT_STEPS = (1, 5000)
_STUDENT = re.compile(r"bert:([0-9]+)x([0-9]+):([0-9]+)")
#: At most this many of the study's own trials join the crowd (``crowd_trials``).
MAX_CROWD_TRIALS = 64
#: The default crowd: 4 strengths x 2 training fractions = 8 subjects (so 9 distinct 1PL
#: difficulties: an item's total score is its difficulty's sufficient statistic).
DEFAULT_CROWD: tuple[str, ...] = tuple(
    f"tfidf-lr:{c}:{f}" for c in (0.1, 0.3, 1, 3) for f in (0.2, 1)
)

# Each field: its JSON types and default.
_FIELDS: dict[str, tuple[tuple[type, ...], Any]] = {
    "difficulty": ((str,), None),  # per method: irt for pudf, length for competency
    "scheduler": ((str,), None),  # per method: dds-mae for pudf, root for competency
    "crowd": ((list,), list(DEFAULT_CROWD)),
    "crowd_fit": ((str,), "cross-fit"),
    "folds": ((int,), 5),
    "crowd_trials": ((int,), 0),  # filled in only when given: older candidates keep their hash
    "num_obs": ((int,), 1000),
    "min_examples": ((int,), 1000),
    "stall_step": ((int, float), 0.1),
    "val_fraction": ((int, float), 0.1),
    "c0": ((int, float), 0.01),
    "duration": ((int, float), 0.5),
}
_CROWD_FIELDS = ("crowd", "crowd_fit", "folds", "crowd_trials")
_READS = {
    "none": (),
    "pudf": (
        "difficulty",
        "scheduler",
        *_CROWD_FIELDS,
        "num_obs",
        "min_examples",
        "stall_step",
        "val_fraction",
    ),
    "competency": ("difficulty", "scheduler", *_CROWD_FIELDS, "min_examples", "c0", "duration"),
}


def curriculum_summary(curriculum: dict[str, Any]) -> dict[str, Any]:
    """A checked ``data.curriculum`` without the fields its method would fill in anyway: what
    to show people (``pudf crowd_trials=3`` rather than every default)."""
    try:
        defaults = validate_curriculum({"method": curriculum.get("method", "none")})
    except SpecError:
        return dict(curriculum)
    return {k: v for k, v in curriculum.items() if k == "method" or defaults.get(k) != v}


def validate_curriculum(curriculum: Any) -> dict[str, Any]:
    """A ``data.curriculum`` object checked, with the method's defaults filled in.

    Raises:
        SpecError: Not an object, an unknown method, a field the method does not read, a
            value of the wrong type or out of range, or a scheduler or crowd that does not go
            with the difficulty; the field is named and the fix given.
    """
    if not isinstance(curriculum, dict):
        raise SpecError(SECTION, f"must be a JSON object, got {type(curriculum).__name__}")
    method = curriculum.get("method", "none")
    if method not in METHODS:
        raise SpecError(
            f"{SECTION}.method",
            f"unknown curriculum method {method!r}",
            f"one of {', '.join(METHODS)}",
        )
    reads = _READS[method]
    for key, value in curriculum.items():
        if key == "method":
            continue
        if key not in reads:
            known = ", ".join(reads) or "no other field"
            raise SpecError(f"{SECTION}.{key}", "unknown field", f"method {method!r} reads {known}")
        types = _FIELDS[key][0]
        if isinstance(value, bool) or not isinstance(value, types):
            names = " or ".join(t.__name__ for t in types)
            raise SpecError(f"{SECTION}.{key}", f"must be {names}, got {value!r}")
        if isinstance(value, float) and not math.isfinite(value):
            raise SpecError(f"{SECTION}.{key}", f"must be finite, got {value!r}")
    if method == "none":
        return {"method": "none"}
    out = {"method": method, **{k: _FIELDS[k][1] for k in reads}, **curriculum}
    if "crowd_trials" not in curriculum:
        del out["crowd_trials"]
    if method == "pudf":
        out["difficulty"] = out["difficulty"] or "irt"
        out["scheduler"] = out["scheduler"] or "dds-mae"
        _only(out, "difficulty", ("irt",), "PUDF's difficulties are the crowd's IRT fit")
        _only(
            out,
            "scheduler",
            ("dds-mae",),
            'for IRT difficulty with a competency schedule use method "competency" with '
            'difficulty "irt"',
        )
    else:
        out["difficulty"] = out["difficulty"] or "length"
        out["scheduler"] = out["scheduler"] or "root"
        _only(out, "difficulty", DIFFICULTIES, "")
        _only(out, "scheduler", ("linear", "root"), 'dds-mae is method "pudf"')
        if out["difficulty"] != "irt":
            given = [k for k in _CROWD_FIELDS if k in curriculum]
            if given:
                raise SpecError(
                    f"{SECTION}.{given[0]}",
                    f"only difficulty 'irt' uses a crowd, not {out['difficulty']!r}",
                    "leave it out, or set difficulty to irt",
                )
            for key in _CROWD_FIELDS:
                out.pop(key, None)
        _range(out, "c0", 0, 1, "the first epoch's competency, e.g. 0.01", open_high=True)
        _range(out, "duration", 0, 1, "the share of max_steps to reach competency 1")
    if "crowd" in out:
        _check_crowd(out)
    for key in ("num_obs", "min_examples"):
        if key in out and out[key] < 1:
            raise SpecError(f"{SECTION}.{key}", f"must be >= 1, got {out[key]}")
    if "stall_step" in out and out["stall_step"] <= 0:
        raise SpecError(f"{SECTION}.stall_step", f"must be > 0, got {out['stall_step']}")
    if "val_fraction" in out:
        _range(out, "val_fraction", 0, 0.5, "PUDF holds out 0.1 of train", open_high=False)
    return out


def _check_crowd(out: dict[str, Any]) -> None:
    if out["crowd_fit"] != "cross-fit":
        raise SpecError(
            f"{SECTION}.crowd_fit",
            f"{out['crowd_fit']!r}: the crowd is fitted on folds of the training split only",
            'use "cross-fit": a crowd fitted on the dev split leaks the data that scores '
            "the candidate, as the reference code does",
        )
    out["crowd"] = [_check_subject(i, s) for i, s in enumerate(out["crowd"])]
    if not out["crowd"]:
        raise SpecError(f"{SECTION}.crowd", "is empty", f"e.g. {list(DEFAULT_CROWD[:3])}")
    if len(set(out["crowd"])) != len(out["crowd"]):
        raise SpecError(f"{SECTION}.crowd", "names a subject twice")
    if not 2 <= out["folds"] <= 20:
        raise SpecError(f"{SECTION}.folds", f"must be in [2, 20], got {out['folds']}")
    trials = out.get("crowd_trials", 0)
    if not 0 <= trials <= MAX_CROWD_TRIALS:
        raise SpecError(
            f"{SECTION}.crowd_trials",
            f"must be in [0, {MAX_CROWD_TRIALS}], got {trials}",
            "how many of the study's trials answer beside the crowd, e.g. 8; 0 for none",
        )


class TfidfSubject(NamedTuple):
    """A ``"tfidf-lr:<C>[:<fraction>]"`` subject."""

    kind: str
    strength: float
    fraction: float


class StudentSubject(NamedTuple):
    """A ``"bert:<layers>x<hidden>:<steps>"`` subject."""

    kind: str
    layers: int
    hidden: int
    steps: int


def parse_subject(subject: str) -> TfidfSubject | StudentSubject:
    """A crowd subject's parts: kind, strength C and training fraction (1 when not given) of a
    TF-IDF subject; kind, layers, hidden width and steps of a student.

    Raises:
        ValueError: Neither ``"tfidf-lr:<C>[:<fraction>]"`` with C > 0 and the fraction in
            (0, 1], nor ``"bert:<layers>x<hidden>:<steps>"`` within the student bounds.
    """
    kind, _, rest = subject.partition(":")
    if kind == "bert":
        return _parse_student(subject)
    parts = rest.split(":") if rest else []
    if kind not in SUBJECT_KINDS or not 1 <= len(parts) <= 2:
        raise ValueError(
            f'{subject!r} is not "tfidf-lr:<C>", "tfidf-lr:<C>:<fraction>" or '
            '"bert:<layers>x<hidden>:<steps>"'
        )
    try:
        strength = float(parts[0])
        fraction = float(parts[1]) if len(parts) == 2 else 1.0
    except ValueError:
        raise ValueError(f"{subject!r}: C and the fraction must be numbers") from None
    if not (math.isfinite(strength) and strength > 0):
        raise ValueError(f"{subject!r}: C must be > 0")
    if not 0 < fraction <= 1:
        raise ValueError(f"{subject!r}: the training fraction must be in (0, 1]")
    return TfidfSubject(kind, strength, fraction)


def _parse_student(subject: str) -> StudentSubject:
    match = _STUDENT.fullmatch(subject)
    if match is None:
        raise ValueError(f'{subject!r} is not "bert:<layers>x<hidden>:<steps>" (whole numbers)')
    layers, hidden, steps = (int(g) for g in match.groups())
    canonical = f"bert:{layers}x{hidden}:{steps}"
    if subject != canonical:  # one spelling per subject: the crowd's names are its cache key
        raise ValueError(f"{subject!r}: write it {canonical!r}")
    for name, value, (low, high) in (
        ("layers", layers, STUDENT_LAYERS),
        ("hidden", hidden, STUDENT_HIDDEN),
        ("steps", steps, STUDENT_STEPS),
    ):
        if not low <= value <= high:
            raise ValueError(f"{subject!r}: {name} must be in [{low}, {high}], got {value}")
    if hidden % STUDENT_HEADS:
        raise ValueError(
            f"{subject!r}: hidden must be divisible by the {STUDENT_HEADS} attention heads"
        )
    return StudentSubject("bert", layers, hidden, steps)


def _check_subject(index: int, subject: Any) -> str:
    if not isinstance(subject, str):
        raise SpecError(f"{SECTION}.crowd[{index}]", f"must be a string, got {subject!r}")
    try:
        parse_subject(subject)
    except ValueError as e:
        raise SpecError(
            f"{SECTION}.crowd[{index}]", str(e), 'e.g. "tfidf-lr:1:0.3" or "bert:1x32:200"'
        ) from None
    return subject


def _only(out: dict[str, Any], key: str, allowed: tuple[str, ...], hint: str) -> None:
    if out[key] not in allowed:
        raise SpecError(
            f"{SECTION}.{key}",
            f"{out[key]!r} is not one of {', '.join(allowed)} for method {out['method']!r}",
            hint,
        )


def _range(
    out: dict[str, Any], key: str, low: float, high: float, hint: str, open_high: bool = False
) -> None:
    value = out[key]
    if not (low < value < high if open_high else low < value <= high):
        bracket = ")" if open_high else "]"
        raise SpecError(
            f"{SECTION}.{key}", f"must be in ({low}, {high}{bracket}, got {value}", hint
        )
