"""A PostgreSQL cluster of the project's own, on loopback: ``MLOPS_BACKEND=postgres make up``.

The embedded stack defaults to SQLite. With ``MLOPS_BACKEND=postgres`` the stack creates a
cluster under ``<home>/postgres`` with ``initdb`` (once), runs the server as one of its services
on ``127.0.0.1:MLOPS_POSTGRES_PORT`` and puts the three databases on it: ``airflow`` (Airflow's
metadata), ``mlflow`` (MLflow's backend store) and ``ops`` (the loop's ops store). The role
``mlops`` logs in with a generated password kept in ``<home>/run/postgres-password`` (owner-only);
nothing else is accepted (``scram-sha-256`` on loopback, no socket in a shared folder). The password
is never on a command line: ``initdb`` reads it from an owner-only file deleted right after, clients
pass it to the driver, and the services get their URLs through the environment.

PostgreSQL refuses to run as root. When the stack runs as root (containers, CI), the server and
``initdb`` run as the ``postgres`` system user (created by Debian's ``postgresql`` package), so
that user must be able to reach the data folder. The same module backs the tests' PostgreSQL
fixture (``tests/pg.py``). Standard library only, like :mod:`tooling.stack`.
"""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
from pathlib import Path

ROLE = "mlops"
DATABASES = ("airflow", "mlflow", "ops")
SYSTEM_USER = "postgres"


class PostgresError(RuntimeError):
    """PostgreSQL could not be set up; the message says what to do."""


def pg_bin(name: str) -> str:
    """Path of a PostgreSQL server program (``initdb``, ``postgres``, ``pg_ctl``): the newest
    Debian install under /usr/lib/postgresql first (PATH may hold only the client), then PATH."""
    for version_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=_version, reverse=True):
        path = Path(version_dir) / name
        if path.exists():
            return str(path)
    found = shutil.which(name)
    if found:
        return found
    raise PostgresError(
        f"PostgreSQL's `{name}` was not found: install the server (Debian: apt-get install -y postgresql) "
        "or use the default SQLite backend (unset MLOPS_BACKEND)"
    )


def _version(path: str) -> tuple[int, ...]:
    try:
        return tuple(int(p) for p in Path(path).parent.name.split("."))
    except ValueError:
        return (0,)


def run_as_prefix() -> list[str]:
    """Command prefix that drops root to the ``postgres`` user (empty when not root)."""
    if os.geteuid() != 0:
        return []
    try:
        pwd.getpwnam(SYSTEM_USER)
    except KeyError as exc:
        raise PostgresError(
            f"running as root, and PostgreSQL refuses root: it runs as the '{SYSTEM_USER}' system user, which does not exist "
            "(Debian's postgresql package creates it), or run the stack as a normal user"
        ) from exc
    setpriv = shutil.which("setpriv")
    if not setpriv:
        raise PostgresError("running as root needs util-linux's setpriv to start PostgreSQL as the 'postgres' user")
    return [setpriv, f"--reuid={SYSTEM_USER}", f"--regid={SYSTEM_USER}", "--init-groups", "--"]


def _hand_to_system_user(path: Path) -> None:
    if os.geteuid() != 0:
        return
    entry = pwd.getpwnam(SYSTEM_USER)
    os.chown(path, entry.pw_uid, entry.pw_gid)
    probe = subprocess.run([*run_as_prefix(), "test", "-w", str(path)], capture_output=True, check=False)
    if probe.returncode != 0:
        raise PostgresError(
            f"PostgreSQL runs as the '{SYSTEM_USER}' user (it refuses root) and cannot reach {path}: "
            "make its parent folders traversable (chmod o+x), or set MLOPS_POSTGRES_DIR to a folder it can reach"
        )


def ensure_cluster(data_dir: Path, password: str, log_path: Path) -> bool:
    """Create the cluster in ``data_dir`` unless one is there; returns True when it was created."""
    if (data_dir / "PG_VERSION").exists():
        return False
    data_dir.mkdir(parents=True, exist_ok=True)
    data_dir.chmod(0o700)
    _hand_to_system_user(data_dir)
    # The password reaches initdb through an owner-only file (never its command line), deleted
    # right after, whatever happens.
    pwfile = data_dir.parent / f".{data_dir.name}-initdb.pw"
    pwfile.unlink(missing_ok=True)
    fd = os.open(pwfile, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w") as fh:
            fh.write(password + "\n")
        _hand_to_system_user(pwfile)
        rc = _initdb(data_dir, pwfile, log_path)
    finally:
        pwfile.unlink(missing_ok=True)
    if rc != 0:
        raise PostgresError(f"initdb failed (exit {rc}); log: {log_path}")
    return True


def _initdb(data_dir: Path, pwfile: Path, log_path: Path) -> int:
    cmd = [
        *run_as_prefix(),
        pg_bin("initdb"),
        "-D",
        str(data_dir),
        f"--username={ROLE}",
        f"--pwfile={pwfile}",
        "--auth=scram-sha-256",
        "--encoding=UTF8",
        "--locale=C",
    ]
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("ab") as log:
        return subprocess.run(cmd, stdout=log, stderr=subprocess.STDOUT, timeout=300, check=False).returncode


def server_command(data_dir: Path, host: str, port: int) -> list[str]:
    """The postmaster in the foreground (the stack supervises it like its other services)."""
    return [
        *run_as_prefix(),
        pg_bin("postgres"),
        "-D",
        str(data_dir),
        "-h",
        host,
        "-p",
        str(port),
        "-k",
        str(data_dir),  # the Unix socket stays inside the private data folder
        "-c",
        "max_connections=200",  # four Airflow components, their tasks, MLflow's workers, serving
    ]


def url(host: str, port: int, password: str, database: str, driver: str = "postgresql+psycopg2") -> str:
    return f"{driver}://{ROLE}:{password}@{host}:{port}/{database}"


def healthy(host: str, port: int, password: str) -> bool:
    try:
        import psycopg2
    except ImportError:
        return False
    try:
        conn = psycopg2.connect(host=host, port=port, user=ROLE, password=password, dbname="postgres", connect_timeout=3)
    except psycopg2.Error:
        return False
    conn.close()
    return True


def ensure_databases(host: str, port: int, password: str, names: tuple[str, ...] = DATABASES) -> list[str]:
    """Create the missing databases; returns the ones created."""
    import psycopg2

    conn = psycopg2.connect(host=host, port=port, user=ROLE, password=password, dbname="postgres", connect_timeout=10)
    conn.autocommit = True  # CREATE DATABASE cannot run in a transaction
    created = []
    try:
        with conn.cursor() as cur:
            for name in names:
                cur.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,))
                if cur.fetchone() is None:
                    cur.execute(f'CREATE DATABASE "{name}"')
                    created.append(name)
    finally:
        conn.close()
    return created
