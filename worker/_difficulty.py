"""Per-example difficulties for a curriculum: IRT over an artificial crowd, or a heuristic.

* ``irt`` (PUDF's IRT-AC): an artificial crowd answers every training item and a 1PL model
  (:func:`~archsearch.worker._irt.fit_1pl`) turns the answers into difficulties. The crowd is
  **cross-fitted on the training split**: the items are cut into ``folds`` seeded folds, and
  each subject is trained on the other folds and answers the items of one. The reference code
  fine-tunes its crowd on the GLUE dev split, which is also its test set (an indirect leak);
  here the dev split is never read. Two kinds of subjects (``spaces/_curriculum_spec.py``):
  TF-IDF (unigrams and bigrams) logistic regressions at several strengths C, each trained on a
  fraction of the other folds (``"tfidf-lr:<C>:<fraction>"``; milliseconds each: the default
  crowd is 8 of them), and tiny BERT students trained from scratch for a number of steps on
  the other folds (``"bert:<layers>x<hidden>:<steps>"``, :mod:`~archsearch.worker._crowd_students`;
  seconds to minutes each on a CPU). Students of one architecture at several step counts are
  the paper's crowd of models at several epochs: one training per fold and architecture
  answers at every step count asked. Beside them, the study's own trained trials may answer
  too (``crowd_trials: N``; :mod:`~archsearch.worker._trial_crowd`): each such trial uploads
  its model's in-sample answers on the training items after training, and a later trial adds
  up to N of them as subjects (the fit and its cache key are that module's).
* ``length``: the example's number of words (sentence length, Platanios et al. 2019).
* ``rarity``: the negative mean log unigram frequency of its words, counted over the training
  texts (word rarity, ibid.).

IRT difficulties are cached on disk per (task, crowd, folds, items), keyed by a sha256 of
them (and of the students' recipe version when the crowd has students), in
``$ARCHSEARCH_CURRICULUM_DIR``, else ``$ARCHSEARCH_CACHE_DIR/curriculum``, else
``~/.cache/archsearch/curriculum``: every trial of a study on one machine (and every worker
process there) fits the crowd once; on a worker connected to a server, the study's trials
share the cache file as a trial artifact (:mod:`~archsearch.worker._difficulty_sharing`), so a
study fits it once. A trial's ``crowd_seconds`` is the whole fit in its process, students'
training included.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import re
import time
from collections import Counter
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from archsearch.spaces._curriculum_spec import StudentSubject, TfidfSubject, parse_subject
from archsearch.worker import _crowd_students
from archsearch.worker._irt import fit_1pl

__all__ = [
    "CURRICULUM_DIR_ENV",
    "Difficulties",
    "crowd_responses",
    "curriculum_root",
    "item_difficulties",
    "length_difficulty",
    "rarity_difficulty",
]

CURRICULUM_DIR_ENV = "ARCHSEARCH_CURRICULUM_DIR"
_WORD = re.compile(r"\w+")
# Bump when the crowd or the fit changes, so older cached difficulties are not reused.
_CACHE_VERSION = 1


@dataclasses.dataclass(frozen=True)
class Difficulties:
    """One difficulty per training item, and how it was obtained.

    Attributes:
        values: Higher is harder; IRT difficulties are on the ability scale (θ − b).
        kind: ``irt``, ``length`` or ``rarity``.
        key: The cache key (a sha256 prefix) for ``irt``; empty otherwise.
        seconds: Seconds spent obtaining them in this process (0 when read from the cache).
        cached: Whether they were read from the disk cache.
        crowd_accuracy: The crowd's mean cross-fitted accuracy (``irt`` only; NaN otherwise).
    """

    values: np.ndarray
    kind: str
    key: str = ""
    seconds: float = 0.0
    cached: bool = False
    crowd_accuracy: float = float("nan")

    def info(self) -> dict[str, str]:
        """Provenance entries for the trial's info."""
        out = {"curriculum_difficulty": self.kind}
        if self.key:
            out["curriculum_difficulty_key"] = self.key
            out["curriculum_crowd_cached"] = str(self.cached).lower()
            out["curriculum_crowd_accuracy"] = f"{self.crowd_accuracy:.4f}"
        return out


def curriculum_root() -> Path:
    """Where IRT difficulties are kept (see the module docstring)."""
    named = os.environ.get(CURRICULUM_DIR_ENV)
    if named:
        return Path(named).expanduser()
    base = os.environ.get("ARCHSEARCH_CACHE_DIR")
    root = Path(base).expanduser() if base else Path.home() / ".cache" / "archsearch"
    return root / "curriculum"


def item_difficulties(
    texts: Sequence[str],
    labels: Sequence[int],
    options: Mapping[str, Any],
    *,
    task: str,
    cache_dir: Path | None = None,
) -> Difficulties:
    """The difficulties a checked ``data.curriculum`` asks for, of the training items.

    Args:
        texts: Each training item's text (a pair joined by a space).
        labels: Each item's class (IRT needs right and wrong answers: classification only).
        options: The checked curriculum (``difficulty``, ``crowd``, ``folds``).
        task: The task id (part of the cache key).
        cache_dir: Where IRT difficulties are cached; None: :func:`curriculum_root`.

    Raises:
        ValueError: Fewer items than folds, or a class too rare to appear in every fold's
            training part.
    """
    kind = options["difficulty"]
    if kind == "length":
        return Difficulties(length_difficulty(texts), kind)
    if kind == "rarity":
        return Difficulties(rarity_difficulty(texts), kind)
    crowd, folds = list(options["crowd"]), int(options["folds"])
    key = _cache_key(task, crowd, folds, texts, labels)
    path = (cache_dir or curriculum_root()) / f"{key}.npz"
    try:
        with np.load(path) as f:
            return Difficulties(
                f["difficulty"], kind, key, cached=True, crowd_accuracy=float(f["accuracy"])
            )
    except (OSError, KeyError, ValueError):  # absent or damaged: fit again and overwrite
        pass
    start = time.perf_counter()
    responses = crowd_responses(texts, labels, crowd, folds)
    _, difficulty = fit_1pl(responses)
    seconds = time.perf_counter() - start
    accuracy = float(responses.mean())
    path.parent.mkdir(parents=True, exist_ok=True)
    staging = path.with_name(f".{path.stem}.{os.getpid()}.npz")
    np.savez(staging, difficulty=difficulty, responses=responses, accuracy=accuracy)
    os.replace(staging, path)
    return Difficulties(difficulty, kind, key, seconds, crowd_accuracy=accuracy)


def crowd_responses(
    texts: Sequence[str], labels: Sequence[int], crowd: Sequence[str], folds: int, seed: int = 0
) -> np.ndarray:
    """The crowd's answers on every item, cross-fitted: subjects × items, 1 right, 0 wrong.

    Each fold's items are answered by subjects trained only on (a seeded ``fraction`` of) the
    other folds' items (one TF-IDF vocabulary and one tokenisation over all the texts: they
    read no label). Students of one architecture train once per fold, answering at each of
    their step counts, from a seed of (``seed``, fold, architecture).

    Raises:
        ValueError: Fewer items than folds, or a class missing from a fold's training part.
    """
    y = np.asarray(labels)
    n = len(texts)
    if n < folds:
        raise ValueError(
            f"{n} training items cannot be cut into {folds} folds (lower "
            "data.curriculum.folds, or train on more items)"
        )
    rng = np.random.default_rng(seed)
    fold_of = rng.permutation(np.arange(n) % folds)
    subjects = [parse_subject(s) for s in crowd]
    tfidf = [(j, s) for j, s in enumerate(subjects) if isinstance(s, TfidfSubject)]
    students: dict[tuple[int, int], list[tuple[int, int]]] = {}
    for j, s in enumerate(subjects):
        if isinstance(s, StudentSubject):
            students.setdefault((s.layers, s.hidden), []).append((j, s.steps))
    out = np.zeros((len(subjects), n), dtype=np.float64)
    features = _tfidf_features(texts) if tfidf else None
    encoded = _crowd_students.encode_texts(texts) if students else None
    num_labels = int(y.max()) + 1 if n else 2
    for fold in range(folds):
        held, rest = np.flatnonzero(fold_of == fold), np.flatnonzero(fold_of != fold)
        if len(np.unique(y[rest])) < 2:
            raise ValueError(f"fold {fold}'s training part holds one class only")
        for j, (_, strength, fraction) in tfidf:
            out[j, held] = _tfidf_answers(
                features, y, rest[_stratified_fraction(y[rest], fraction, rng)], held, strength
            )
        for (layers, hidden), members in students.items():
            assert encoded is not None
            answers = _crowd_students.student_answers(
                encoded,
                y,
                rest,
                held,
                layers=layers,
                hidden=hidden,
                steps=[steps for _, steps in members],
                seed=int(np.random.SeedSequence([seed, fold, layers, hidden]).generate_state(1)[0]),
                num_labels=num_labels,
            )
            for (j, _), answered in zip(members, answers, strict=True):
                out[j, held] = answered
    return out


def _tfidf_features(texts: Sequence[str]) -> Any:
    """One vocabulary and IDF over every training text: they read no label, and fitting one
    per fold cost more than the subjects themselves."""
    from sklearn.feature_extraction.text import TfidfVectorizer

    return TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True).fit_transform(list(texts))


def _tfidf_answers(
    features: Any, y: np.ndarray, part: np.ndarray, held: np.ndarray, strength: float
) -> np.ndarray:
    """Whether a TF-IDF subject of strength C trained on ``part`` is right on ``held``."""
    from sklearn.linear_model import LogisticRegression

    # balanced classes: a weak subject still answers both ways (a majority-class subject's
    # answers only repeat the labels); liblinear: fast on sparse features
    model = LogisticRegression(
        C=strength, class_weight="balanced", solver="liblinear", max_iter=200
    )
    model.fit(features[part], y[part])
    return np.asarray(model.predict(features[held]) == y[held])


def length_difficulty(texts: Sequence[str]) -> np.ndarray:
    """Each text's number of words."""
    return np.array([len(_WORD.findall(t)) for t in texts], dtype=np.float64)


def rarity_difficulty(texts: Sequence[str]) -> np.ndarray:
    """Each text's negative mean log unigram probability, counted over ``texts`` (lower-cased
    words); a text without words gets 0."""
    tokenised = [_WORD.findall(t.lower()) for t in texts]
    counts = Counter(w for words in tokenised for w in words)
    total = sum(counts.values()) or 1
    log_p = {w: np.log(c / total) for w, c in counts.items()}
    return np.array(
        [-float(np.mean([log_p[w] for w in words])) if words else 0.0 for words in tokenised]
    )


def _stratified_fraction(y: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Indices of a seeded ``fraction`` of ``y``'s items, at least 2 of every class."""
    if fraction >= 1:
        return np.arange(len(y))
    chosen = []
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        k = max(min(2, len(members)), round(fraction * len(members)))
        chosen.append(rng.choice(members, size=k, replace=False))
    return np.sort(np.concatenate(chosen))


def _cache_key(
    task: str, crowd: Sequence[str], folds: int, texts: Sequence[str], labels: Sequence[int]
) -> str:
    h = hashlib.sha256()
    head: dict[str, Any] = {"v": _CACHE_VERSION, "task": task, "crowd": list(crowd), "folds": folds}
    if any(isinstance(parse_subject(s), StudentSubject) for s in crowd):
        head["students"] = _crowd_students.RECIPE_VERSION  # TF-IDF crowds keep their keys
    h.update(json.dumps(head, sort_keys=True).encode())
    for text, label in zip(texts, labels, strict=True):
        h.update(f"{label}\t{text}\n".encode())
    return h.hexdigest()[:24]
