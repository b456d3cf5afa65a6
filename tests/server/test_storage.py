"""StudyManager on every storage backend: results, restarts, lease expiry and retries.

The tests are the storage conformance suite (``tests/conformance/storage_suite.py``); here it
runs on a SQLite file and on a fresh PostgreSQL database (the ``storage_url`` fixture of
``tests/conftest.py``).
"""

from __future__ import annotations

import pytest
from conformance.storage_suite import StorageConformance

# The server silences these at import; pytest resets warning filters per test.
pytestmark = [
    pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning"),
    pytest.mark.filterwarnings("ignore:Heartbeat of storage is supposed:UserWarning"),
]


class TestStudyManagerStorage(StorageConformance):
    """SQLite and PostgreSQL, through the parametrised ``storage_url`` fixture."""
