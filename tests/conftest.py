"""Shared fixtures. The PostgreSQL machinery lives in ``tests/_postgres.py``."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from _postgres import fresh_database
from _postgres import postgres_url as postgres_url  # a session fixture: one server per run


@pytest.fixture(params=["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def storage_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """An empty Optuna storage on every backend: a SQLite file, a fresh PostgreSQL database."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path}/s.db"
        return
    with fresh_database(request.getfixturevalue("postgres_url")) as url:
        yield url
