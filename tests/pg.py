"""A throwaway PostgreSQL cluster for the test session (``MLOPS_TEST_BACKEND=postgres``).

Started with the same code as the stack's own cluster (:mod:`tooling.postgres`: ``initdb``
then the ``postgres`` server on a free loopback port, password login), in a temporary folder
that the ``postgres`` system user can reach when the tests run as root; stopped and deleted at
the end of the session.
"""

from __future__ import annotations

import secrets
import shutil
import signal
import socket
import subprocess
import tempfile
import time
import uuid
from pathlib import Path

from tooling import postgres


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class TestCluster:
    __test__ = False  # not a test class

    def __init__(self, *, durable: bool = False) -> None:
        """``durable``: a commit is in the WAL before it returns (PostgreSQL's default), for tests
        that crash the server; otherwise ``synchronous_commit=off`` (faster, and a crash may lose
        the last fraction of a second of commits: even the tables a test just created)."""
        self.durable = durable
        self.host = "127.0.0.1"
        self.port = _free_port()
        self.password = secrets.token_urlsafe(16)
        self.root = Path(tempfile.mkdtemp(prefix="mlops-test-pg-"))
        self.root.chmod(0o711)  # the postgres user (when root runs the tests) reaches its data folder
        self.proc: subprocess.Popen[bytes] | None = None

    def url(self, database: str) -> str:
        return postgres.url(self.host, self.port, self.password, database)

    def start(self) -> TestCluster:
        data = self.root / "data"
        postgres.ensure_cluster(data, self.password, self.root / "initdb.log")
        log = (self.root / "server.log").open("ab")
        self.proc = subprocess.Popen(
            [
                *postgres.server_command(data, self.host, self.port),
                "-c",
                "fsync=off",
                *([] if self.durable else ["-c", "synchronous_commit=off"]),
            ],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while not postgres.healthy(self.host, self.port, self.password):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"test PostgreSQL did not start: {(self.root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.3)
        return self

    def create_database(self, prefix: str = "t") -> str:
        """A new empty database; returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:10]}"
        postgres.ensure_databases(self.host, self.port, self.password, (name,))
        return self.url(name)

    def stop_server(self, sig: int = signal.SIGINT) -> None:
        """Stop the server, keep the cluster: SIGINT is PostgreSQL's fast shutdown (open sessions
        are rolled back), SIGQUIT its immediate one (like a crash: recovery at the next start)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.send_signal(sig)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(timeout=10)

    def stop(self) -> None:
        self.stop_server()
        shutil.rmtree(self.root, ignore_errors=True)
