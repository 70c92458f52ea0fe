"""Shared fixtures: a tiny scenes dataset built once per test session."""

from __future__ import annotations

import pytest

from dejavu.data.manifest import read_manifest
from dejavu.data.scenes import build_scenes


@pytest.fixture(scope="session")
def tiny_scenes(tmp_path_factory):
    """Returns the folder of the `smoke` scenes preset (4 classes, A=B=16, public=64, eval=32, 32x32)."""
    return build_scenes(tmp_path_factory.mktemp("scenes") / "smoke", "smoke", seed=0)


@pytest.fixture(scope="session")
def tiny_records(tiny_scenes):
    """Returns the records of the tiny scenes dataset."""
    return read_manifest(tiny_scenes)
