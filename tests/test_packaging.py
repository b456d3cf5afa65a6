"""Packaging metadata in the forms current setuptools keeps accepting."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def test_license_is_an_spdx_expression() -> None:
    # setuptools deprecated the `license = {text = ...}` table; builds fail with it from
    # 2027-02-18. The SPDX string needs setuptools >= 77 (PEP 639).
    meta = tomllib.loads(PYPROJECT.read_text())
    assert isinstance(meta["project"]["license"], str)
    assert re.fullmatch(
        r"[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*", meta["project"]["license"]
    )
    requires = meta["build-system"]["requires"]
    (setuptools,) = [r for r in requires if r.startswith("setuptools")]
    minimum = re.search(r">=\s*(\d+)", setuptools)
    assert minimum is not None and int(minimum.group(1)) >= 77
