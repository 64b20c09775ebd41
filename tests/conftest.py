import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

settings.register_profile("dev", deadline=None, max_examples=100)
settings.register_profile("ci", deadline=None, max_examples=200,
                          suppress_health_check=[HealthCheck.too_slow])
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "dev"))


@pytest.fixture(scope="session")
def postgres():  # noqa: ANN201
    """A throwaway PostgreSQL server for this pytest process (tests/postgres_support.py):
    skipped where none can be started, a failure under CI."""
    import postgres_support

    try:
        server = postgres_support.start()
    except RuntimeError as exc:
        postgres_support.unavailable(str(exc))
    yield server
    server.stop()


@pytest.fixture
def disk_path() -> Iterator[Path]:
    """A temporary folder on the checkout's own disk, for tests whose point is a disk's
    write times (``make test`` puts tmp_path in memory, /dev/shm, where fsync is free)."""
    root = Path(__file__).resolve().parent.parent / ".pytest-disk"
    root.mkdir(exist_ok=True)
    path = Path(tempfile.mkdtemp(dir=root))
    yield path
    shutil.rmtree(path, ignore_errors=True)
