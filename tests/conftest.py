"""Fixtures shared by the test packages."""

from __future__ import annotations

import pytest


@pytest.fixture
def private_cache(tmp_path, monkeypatch):
    """The readers' cache (``DCINET_D2_CACHE``) in this test's own folder, so that no test reads
    what another one cached; returns the folder. Modules that want it for every test say
    ``pytestmark = pytest.mark.usefixtures("private_cache")``."""
    monkeypatch.setenv("DCINET_D2_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"
