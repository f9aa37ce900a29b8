"""Shared fixtures. `harness.py` next to this file holds the hosts and the two-server setup
the tests use; it is importable because this directory is put on the path."""

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent))

import dmdelegate  # noqa: E402


@pytest.fixture(scope="session")
def pki() -> dmdelegate.TestPki:
    """One test CA for every server of the run."""
    return dmdelegate.TestPki()
