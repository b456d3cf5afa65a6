"""The ``optuna`` table format of ``archsearch replay``: the COMPLETE trials of an existing
study in any Optuna storage (the source is its URL, option ``study`` its name), each trial's
parameters a row and its first value (option ``objective``: another index) the score, in the
study's direction. archsearch's repeats (``duplicate_of``) are one row, counted once; the
trials archsearch derived from a job's report (DyLoRA ranks, AutoDistil students' proxy
scores: :data:`DERIVED_MARKERS`) are left out, and counted."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

from archsearch.spaces._errors import SpecError
from archsearch.spaces._table_readers import (
    PADDED_OPTION,
    TABLE_READERS,
    ReplayTable,
    TableReader,
    _check_scalar_arch,
    _finite,
    _padded,
    _rows_table,
)

#: The user attributes that mark a trial archsearch derived from another trial's report (the
#: server's ``_derived_trials.DERIVED_MARKERS``; a test checks they agree).
DERIVED_MARKERS = ("rank_of", "student_of")


@TABLE_READERS.register("optuna")
class OptunaStudyReader(TableReader):
    """The COMPLETE trials of a study in an Optuna storage (the source is its URL)."""

    options: ClassVar[Mapping[str, str]] = {
        "study": "the study's name (required)",
        "objective": "value index, default 0",
        **PADDED_OPTION,
    }

    def read(self, source: str, **options: Any) -> ReplayTable:
        import optuna
        import sqlalchemy.exc

        self.check_options("optuna", options)
        name, objective = options.get("study"), options.get("objective", 0)
        if not isinstance(name, str) or not name:
            raise SpecError("table_options.study", "name the study to read", "--study NAME")
        if isinstance(objective, bool) or not isinstance(objective, int) or objective < 0:
            raise SpecError("table_options.objective", f"must be an index >= 0, got {objective!r}")
        if (
            source.startswith("sqlite:///")
            and not Path(source.removeprefix("sqlite:///")).is_file()
        ):
            raise SpecError(
                "table", f"no SQLite database at {source}", "pass an existing storage URL"
            )
        try:
            # libpq's postgres:// (SQLAlchemy 2 reads only postgresql://), as `serve` takes it
            url = "postgresql://" + source[len("postgres://") :]
            url = url if source.startswith("postgres://") else source
            storage = optuna.storages.RDBStorage(url, skip_compatibility_check=True)
        except (sqlalchemy.exc.SQLAlchemyError, ValueError, ImportError) as e:
            raise SpecError("table", f"cannot open the storage {source}: {e}") from e
        try:
            try:
                study = optuna.load_study(study_name=name, storage=storage)
            except KeyError as e:
                known = ", ".join(s.study_name for s in optuna.get_all_study_summaries(storage))
                raise SpecError(
                    "table_options.study",
                    f"no study {name!r} in {source}",
                    f"known: {known or 'none'}",
                ) from e
            if objective >= len(study.directions):
                raise SpecError(
                    "table_options.objective", f"{name} has {len(study.directions)} objective(s)"
                )
            direction = study.directions[objective].name.lower()
            names = study.metric_names  # archsearch's studies name theirs (objectives' metrics)
            metric = names[objective] if names else f"value {objective}"
            trials = study.get_trials(deepcopy=False, states=(optuna.trial.TrialState.COMPLETE,))
        finally:
            storage.engine.dispose()
        rows = []
        derived = 0
        for t in trials:
            if "duplicate_of" in t.user_attrs:  # an archsearch repeat: its row is counted once
                continue
            if any(marker in t.user_attrs for marker in DERIVED_MARKERS):
                derived += 1
                continue
            score = _finite(t.values[objective]) if t.values else None
            if score is not None and t.params:
                rows.append((_check_scalar_arch(dict(t.params), f"trial {t.number}"), score))
        return _rows_table(
            f"{source} study {name}", rows, direction, metric, _padded(options), derived=derived
        )
