import os

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
