"""Shared fixtures: one local[2] SparkSession, a loopback image server, generated sample data."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
SHARED = REPO.parent / "shared"

os.environ.setdefault("OMP_THREAD_LIMIT", "1")
os.environ.setdefault("IMAGEQUANT_SPARK_LOG_LEVEL", "ERROR")


def shared_path(*parts: str) -> Path:
    """A path under ../shared, or a clean skip when that folder (real data) is absent."""
    path = SHARED.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"{path} is absent (real data lives beside the checkout, never in it)")
    return path


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    from imagequant.config import load_config
    from imagequant.spark.session import build_session

    # No progress lines from the shared session: they would land in whichever test's captured stderr.
    config = load_config(overrides=["spark.master=local[2]", "spark.conf.spark.ui.enabled=false",
                                    "spark.conf.spark.sql.shuffle.partitions=4", "spark.progress_interval_s=0"])
    session = build_session(config, "imagequant-tests")
    yield session
    session.stop()


@pytest.fixture(scope="session")
def image_server() -> Iterator[object]:
    from tests.httpserver import ImageServer

    with ImageServer() as server:
        yield server
