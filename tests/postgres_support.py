"""A throwaway PostgreSQL server for the tests: ``initdb`` into a temporary folder, then
``pg_ctl start`` listening on 127.0.0.1 at a free port only, with the durability settings a
test cluster does not need turned off (it starts in about a second). One per pytest
process (each xdist worker starts its own), stopped and deleted at the end.

``initdb`` refuses to run as root: as root (CI), the cluster is made and run by the
``postgres`` system user that Debian's package creates, in a folder it owns.

Where no PostgreSQL can be found or started the tests are skipped with the reason, except
under CI (the ``CI`` variable set), where they fail: CI installs Debian's ``postgresql``
package (``.ci/run``) and must really run them.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import socket
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import pytest

SUPERUSER = "fedtally_admin"
#: the test cluster's superuser password (it listens on loopback only, for this process)
SUPERUSER_PASSWORD = "admin-secret-for-tests"


@dataclass
class PostgresServer:
    folder: Path
    port: int
    binaries: Path
    run_as: str | None

    def url(self, database: str = "postgres", user: str = SUPERUSER,
            password: str = SUPERUSER_PASSWORD) -> str:
        return f"postgresql+psycopg://{user}:{password}@127.0.0.1:{self.port}/{database}"

    def connect(self, database: str = "postgres"):  # noqa: ANN201 - psycopg is a test import
        import psycopg

        return psycopg.connect(host="127.0.0.1", port=self.port, user=SUPERUSER,
                               password=SUPERUSER_PASSWORD, dbname=database, autocommit=True)

    def database(self, name: str) -> str:
        """A new, empty database (its name)."""
        with self.connect() as admin:
            admin.execute(f'CREATE DATABASE "{name}"')
        return name

    def reader(self, database: str, role: str, password: str, tables: list[str]) -> str:
        """A role that may only connect and SELECT ``tables`` (what a hospital grants a
        node); its URL."""
        with self.connect(database) as admin:
            admin.execute(f"CREATE ROLE {role} LOGIN PASSWORD '{password}'")
            admin.execute(f'GRANT CONNECT ON DATABASE "{database}" TO {role}')
            admin.execute(f"GRANT USAGE ON SCHEMA public TO {role}")
            admin.execute("REVOKE CREATE ON SCHEMA public FROM PUBLIC")
            for table in tables:
                admin.execute(f'GRANT SELECT ON "{table}" TO {role}')
        return self.url(database, role, password)

    def stop(self) -> None:
        _run(self, [str(self.binaries / "pg_ctl"), "stop", "-D", str(self.folder / "data"),
                    "-m", "immediate", "-s"], check=False)
        shutil.rmtree(self.folder, ignore_errors=True)


def _binaries() -> Path | None:
    found = shutil.which("initdb")
    if found and shutil.which("pg_ctl"):
        return Path(os.path.realpath(found)).parent
    for folder in sorted(glob.glob("/usr/lib/postgresql/*/bin"), reverse=True):
        if Path(folder, "initdb").exists() and Path(folder, "pg_ctl").exists():
            return Path(folder)
    return None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _run(server: PostgresServer, command: list[str], check: bool = True
         ) -> subprocess.CompletedProcess[str]:
    if server.run_as is not None:
        command = ["setpriv", f"--reuid={server.run_as}", f"--regid={server.run_as}",
                   "--init-groups", "--", *command]
    return subprocess.run(command, capture_output=True, text=True, timeout=60, check=check,
                          cwd=server.folder, stdin=subprocess.DEVNULL)


def start() -> PostgresServer:
    """A fresh cluster, running; raises RuntimeError saying why it cannot be had."""
    binaries = _binaries()
    if binaries is None:
        raise RuntimeError("no PostgreSQL server binaries (initdb, pg_ctl) on PATH or in "
                           "/usr/lib/postgresql/*/bin: apt-get install postgresql")
    run_as = None
    folder = Path(tempfile.mkdtemp(prefix="fedtally-pg-"))
    if os.geteuid() == 0:
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            shutil.rmtree(folder)
            raise RuntimeError("running as root and there is no 'postgres' user to run the "
                               "server as (initdb refuses root)") from None
        run_as = "postgres"
        os.chown(folder, user.pw_uid, user.pw_gid)
    server = PostgresServer(folder, _free_port(), binaries, run_as)
    data = folder / "data"
    secret = folder / "password"
    secret.write_text(SUPERUSER_PASSWORD + "\n")
    if run_as is not None:
        os.chown(secret, pwd.getpwnam(run_as).pw_uid, pwd.getpwnam(run_as).pw_gid)
    try:
        _run(server, [str(binaries / "initdb"), "-D", str(data), "-U", SUPERUSER,
                      f"--pwfile={secret}", "--auth=scram-sha-256", "--no-sync", "-E", "UTF8",
                      "--locale=C"])
        options = (f"-c listen_addresses=127.0.0.1 -c port={server.port} "
                   f"-c unix_socket_directories='{folder}' -c fsync=off "
                   "-c synchronous_commit=off -c full_page_writes=off "
                   "-c shared_buffers=32MB -c max_connections=40")
        _run(server, [str(binaries / "pg_ctl"), "start", "-D", str(data), "-w", "-t", "30",
                      "-s", "-l", str(folder / "server.log"), "-o", options])
    except (subprocess.SubprocessError, OSError) as exc:
        log = folder / "server.log"
        detail = getattr(exc, "stderr", "") or (log.read_text()[-500:] if log.exists() else "")
        server.stop()
        raise RuntimeError(f"PostgreSQL did not start: {exc} {detail}".strip()) from exc
    return server


def unavailable(reason: str) -> None:
    """Skip, or fail under CI, which must run the PostgreSQL tests."""
    if os.environ.get("CI"):
        pytest.fail(f"PostgreSQL is required in CI: {reason}", pytrace=False)
    pytest.skip(f"no PostgreSQL server: {reason}")
