"""AutoDistil's students as a design space: K sub-spaces of students over one teacher.

The ``autodistil`` loop (``search/_autodistil_loop.py``) searches this space in three stages,
and each stage's jobs carry one of two kinds of architecture:

* a **sub-space** (the ``supernet`` job that trains its weight-sharing supernet, and the
  ``rank`` job that scores each of its students): ``{"teacher": name, "subspace":
  SubSpace.to_dict()}``; parameters ``{"target": "subspace", "subspace": name}``;
* a **student** (the ``train`` job that fine-tunes it stand-alone): ``{"teacher": name,
  "student": Student.to_dict()}``; parameters ``{"target": "student", "student": key}``.

The students and their costs come from ``spaces/_students.py`` (shared with the worker). The
options say which teacher (a known name, or any teacher with its ``teacher_shape``) and which
sub-spaces (a preset name or a list of ``SubSpace`` dicts).
"""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import TYPE_CHECKING, Any

from archsearch.spaces._base import SPACES, DesignSpace
from archsearch.spaces._errors import SpecError
from archsearch.spaces._files import read_text
from archsearch.spaces._options import reject_unknown
from archsearch.spaces._students import (
    BERT_BASE,
    MINILM_L6,
    Student,
    TeacherShape,
    flops,
    params,
)
from archsearch.spaces._subspaces import MAX_STUDENTS, PRESETS, SubSpace, preset

if TYPE_CHECKING:
    import optuna

#: Teachers whose shape the server knows without loading them.
KNOWN_TEACHERS: dict[str, TeacherShape] = {
    "all-MiniLM-L6-v2": MINILM_L6,
    "sentence-transformers/all-MiniLM-L6-v2": MINILM_L6,
    "bert-base-uncased": BERT_BASE,
}
DEFAULT_TEACHER = "all-MiniLM-L6-v2"
#: At most this many sub-spaces per study (and ``MAX_STUDENTS`` students).
MAX_SUBSPACES = 16
_OPTIONS = {"teacher", "teacher_shape", "subspaces", "seq_len"}


def _teacher(options: dict[str, Any]) -> tuple[str, TeacherShape]:
    name = options.get("teacher", DEFAULT_TEACHER)
    if not isinstance(name, str) or not name.strip():
        raise SpecError("space_options.teacher", f"must be a teacher's name or path, got {name!r}")
    shape = options.get("teacher_shape")
    if shape is not None:
        try:
            return name, TeacherShape.from_dict(shape)
        except SpecError as e:
            raise SpecError("space_options.teacher_shape", e.problem, e.fix) from None
    if name in KNOWN_TEACHERS:
        return name, KNOWN_TEACHERS[name]
    read = _folder_shape(name)
    if read is None:
        raise SpecError(
            "space_options.teacher",
            f"the shape of teacher {name!r} is not known here (the server reads the shape "
            "from an absolute teacher folder's config.json; it found none)",
            f"use one of {', '.join(KNOWN_TEACHERS)}, or give space_options.teacher_shape "
            '({"layers", "hidden", "heads", "intermediate", "vocab_size", "max_positions"})',
        )
    return name, read


def _folder_shape(name: str) -> TeacherShape | None:
    """The shape in a local teacher folder's ``config.json``, or None when there is none.

    A teacher given by its path is often a folder the server can read too (a shared file
    system, or one machine); its transformers config says the shape, so the user need not
    copy it into ``teacher_shape``. Read as JSON: the server does not import transformers.
    """
    if not name.startswith(("/", "~")):
        return None  # a hub name, or a path relative to some worker's directory
    config = Path(name).expanduser() / "config.json"
    if not config.exists():
        return None
    fix = "fix the file, or give space_options.teacher_shape"
    text = read_text(config, "space_options.teacher", 2**20, fix)
    try:
        data = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise SpecError("space_options.teacher", f"{config} is not JSON: {e}", fix) from None
    field = f"space_options.teacher ({config})"
    if not isinstance(data, dict):
        raise SpecError(field, "is not a JSON object", "give space_options.teacher_shape")
    if data.get("model_type", "bert") != "bert":
        raise SpecError(
            field,
            f"the teacher is a {data.get('model_type')!r} model; AutoDistil distils BERT-style "
            "teachers (model_type 'bert')",
        )
    keys = {
        "layers": "num_hidden_layers",
        "hidden": "hidden_size",
        "heads": "num_attention_heads",
        "intermediate": "intermediate_size",
        "vocab_size": "vocab_size",
        "max_positions": "max_position_embeddings",
        "type_vocab_size": "type_vocab_size",
    }
    shape = {ours: data[theirs] for ours, theirs in keys.items() if theirs in data}
    try:
        return TeacherShape.from_dict(shape)
    except SpecError as e:
        raise SpecError(
            field, e.problem, "fix the file, or give space_options.teacher_shape"
        ) from None


def _subspaces(value: Any, teacher: TeacherShape) -> list[SubSpace]:
    field = "space_options.subspaces"
    if isinstance(value, str):
        if value not in PRESETS:
            raise SpecError(field, f"unknown preset {value!r}", f"one of {', '.join(PRESETS)}")
        return preset(value, teacher)
    if not isinstance(value, list) or not 0 < len(value) <= MAX_SUBSPACES:
        raise SpecError(
            field,
            f"must be a preset name or a list of 1-{MAX_SUBSPACES} sub-spaces, got {value!r}",
            'e.g. "minilm-k3", or [{"name": "tiny", "layers": [0.5], "heads": [0.5], '
            '"mlp_ratio": [2.0]}]',
        )
    out = [SubSpace.from_dict(d, f"{field}[{i}]") for i, d in enumerate(value)]
    names = [s.name for s in out]
    if len(set(names)) != len(names):
        raise SpecError(field, f"two sub-spaces share a name: {names}", "name each one once")
    for i, s in enumerate(out):
        try:
            s.students(teacher)
        except SpecError as e:
            raise SpecError(f"{field}[{i}]", str(e)) from None
    return out


@SPACES.register("autodistil")
class AutoDistilSpace(DesignSpace):
    """AutoDistil's sub-spaces and students over one teacher (see the module docstring).

    Options:
        teacher: The teacher's name (default ``all-MiniLM-L6-v2``; ``bert-base-uncased`` for
            the paper's setting) or a path, with ``teacher_shape`` when its shape is not known.
        teacher_shape: ``TeacherShape.to_dict()`` of any other teacher.
        subspaces: A preset (``minilm-k3`` default, ``minilm-k1``, ``autodistil-k3``,
            ``autodistil-k1``) or a list of ``SubSpace`` dicts.
        seq_len: Sequence length the FLOPs of a student are counted at (default 128).
    """

    name = "autodistil"

    def __init__(self, **options: Any) -> None:
        reject_unknown(options, _OPTIONS)
        self.teacher_name, self.teacher = _teacher(options)
        # A shape read from the teacher's folder is stored with the study like a given one,
        # so a restart serves it without the folder.
        self._shape_given = "teacher_shape" in options or self.teacher_name not in KNOWN_TEACHERS
        self._raw_subspaces = options.get("subspaces", "minilm-k3")
        self.subspaces = _subspaces(self._raw_subspaces, self.teacher)
        seq_len = options.get("seq_len", 128)
        if isinstance(seq_len, bool) or not isinstance(seq_len, int) or not 0 < seq_len <= 4096:
            raise SpecError("space_options.seq_len", f"must be an int in 1..4096, got {seq_len!r}")
        self.seq_len = seq_len
        #: Each sub-space's students, sorted by parameters.
        self.students = {s.name: s.students(self.teacher) for s in self.subspaces}
        union = {st.key(): st for sts in self.students.values() for st in sts}
        if len(union) > MAX_STUDENTS:
            raise SpecError(
                "space_options.subspaces", f"{len(union)} students; at most {MAX_STUDENTS}"
            )
        self._by_key = dict(sorted(union.items(), key=lambda kv: (self.params(kv[1]), kv[0])))
        self._by_name = {s.name: s for s in self.subspaces}

    # ------------------------------------------------------------------ costs and look-ups

    def params(self, student: Student) -> int:
        """The student's parameters (embeddings, encoder and pooler)."""
        return params(self.teacher, student)

    def flops(self, student: Student) -> int:
        """The student's FLOPs for one ``seq_len``-token sequence (2 x multiply-adds)."""
        return flops(self.teacher, student, self.seq_len)

    def student(self, key: str) -> Student:
        """The student with this key.

        Raises:
            KeyError: No sub-space holds it.
        """
        return self._by_key[key]

    def subspace(self, name: str) -> SubSpace:
        """The sub-space called ``name`` (KeyError when there is none)."""
        return self._by_name[name]

    @property
    def student_keys(self) -> tuple[str, ...]:
        """Every student of every sub-space once, smallest first."""
        return tuple(self._by_key)

    # ------------------------------------------------------------------ architectures

    def subspace_arch(self, sub: SubSpace) -> dict[str, Any]:
        return {"teacher": self.teacher_name, "subspace": sub.to_dict()}

    def student_arch(self, student: Student) -> dict[str, Any]:
        return {"teacher": self.teacher_name, "student": student.to_dict()}

    def suggest(self, trial: optuna.Trial) -> dict[str, Any]:
        target = trial.suggest_categorical("target", ("subspace", "student"))
        if target == "subspace":
            name = trial.suggest_categorical("subspace", tuple(self._by_name))
            return self.subspace_arch(self._by_name[str(name)])
        key = trial.suggest_categorical("student", self.student_keys)
        return self.student_arch(self._by_key[str(key)])

    def validate(self, architecture: Any) -> dict[str, Any]:
        if not isinstance(architecture, dict) or not architecture:
            raise SpecError(
                "architecture",
                f"must be a JSON object, got {architecture!r}",
                '{"teacher": ..., "subspace": {...}} or {"teacher": ..., "student": {...}}',
            )
        unknown = sorted(set(architecture) - {"teacher", "subspace", "student"})
        if unknown:
            raise SpecError(f"architecture.{unknown[0]}", "unknown field")
        if architecture.get("teacher") != self.teacher_name:
            raise SpecError(
                "architecture.teacher",
                f"{architecture.get('teacher')!r} is not this study's teacher",
                f"use {self.teacher_name!r}",
            )
        if ("subspace" in architecture) == ("student" in architecture):
            raise SpecError("architecture", "must hold exactly one of subspace and student")
        if "subspace" in architecture:
            sub = SubSpace.from_dict(architecture["subspace"], "architecture.subspace")
            known = self._by_name.get(sub.name)
            if known is None or known != sub:
                raise SpecError(
                    "architecture.subspace",
                    f"sub-space {sub.name!r} is not one of this study's",
                    f"one of {', '.join(self._by_name)} as the spec defines it",
                )
            return self.subspace_arch(known)
        try:
            st = Student.from_dict(architecture["student"], self.teacher)
        except SpecError as e:
            raise SpecError(f"architecture.{e.field}", e.problem, e.fix) from None
        if st.key() not in self._by_key:
            raise SpecError(
                "architecture.student",
                f"student {st.key()} is in none of this study's sub-spaces",
            )
        return self.student_arch(st)

    def sample(self, rng: random.Random) -> dict[str, Any]:
        if rng.random() < 0.5:
            return self.subspace_arch(rng.choice(self.subspaces))
        return self.student_arch(self._by_key[rng.choice(self.student_keys)])

    def to_params(self, architecture: dict[str, Any]) -> dict[str, Any]:
        if "subspace" in architecture:
            return {"target": "subspace", "subspace": architecture["subspace"]["name"]}
        return {"target": "student", "student": Student.from_dict(architecture["student"]).key()}

    def describe(self, architecture: dict[str, Any]) -> str:
        if "subspace" in architecture:
            name = architecture["subspace"]["name"]
            return f"sub-space {name} ({len(self.students.get(name, []))} students)"
        st = Student.from_dict(architecture["student"])
        return f"student {st.key()} ({self.params(st) / 1e6:.1f}M params)"

    def options(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "teacher": self.teacher_name,
            "subspaces": self._raw_subspaces
            if isinstance(self._raw_subspaces, str)
            else [s.to_dict() for s in self.subspaces],
            "seq_len": self.seq_len,
        }
        if self._shape_given:
            out["teacher_shape"] = self.teacher.to_dict()
        return out
