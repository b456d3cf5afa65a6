"""`archsearch replay` reads a study from a PostgreSQL URL written as libpq writes it."""

from __future__ import annotations

import optuna
import pytest
from _postgres import fresh_database

from archsearch.spaces import read_table


@pytest.mark.postgres
def test_a_postgres_url_is_read_as_postgresql(postgres_url: str) -> None:
    """postgres:// (libpq's, Heroku's) failed: "Can't load plugin: sqlalchemy.dialects:postgres",
    though `serve` takes it."""
    with fresh_database(postgres_url) as url:
        storage = optuna.storages.RDBStorage(url)
        study = optuna.create_study(study_name="t1", storage=storage, direction="maximize")
        choices = optuna.distributions.CategoricalDistribution([8, 16, 32])
        for d in (8, 16, 32):
            study.add_trial(
                optuna.trial.create_trial(
                    params={"d": d}, distributions={"d": choices}, value=d / 32
                )
            )
        libpq = "postgres://" + url.split("://", 1)[1]
        table = read_table(libpq, "optuna", study="t1")
        assert sorted(table.scores) == [0.25, 0.5, 1.0]
        storage.engine.dispose()
