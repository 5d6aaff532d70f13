"""A shared MLflow tracking server on a PostgreSQL backend store, on loopback (`make mlflow-server`).

PostgreSQL comes from Debian's packages (`apt-get install postgresql`); this module only
initialises a cluster in a folder of its own (initdb), starts it on 127.0.0.1 with password
authentication, creates the `mlflow` database and runs `mlflow server` against it with a
local artifact root. PostgreSQL refuses to run as root, so as root the cluster belongs to
Debian's `postgres` system user. The test suite starts the same stack on free ports.

    python -m training.tracking_server --dir .mlflow-server --port 5000
"""

from __future__ import annotations

import argparse
import os
import secrets
import shutil
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg2

SERVICE_USER = "postgres"  # Debian's system user for PostgreSQL
DATABASE = "mlflow"
DB_USER = "mlflow"


class PostgresUnavailable(RuntimeError):
    """PostgreSQL's server binaries are not installed (apt-get install postgresql)."""


def find_postgres_bin() -> Path:
    """The newest /usr/lib/postgresql/<version>/bin holding initdb, pg_ctl and postgres."""
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"),
                        key=lambda p: int(p.parent.parent.name) if p.parent.parent.name.isdigit() else 0)
    if not candidates:
        found = shutil.which("initdb")
        if found is None:
            raise PostgresUnavailable("PostgreSQL server binaries not found: run `apt-get install -y postgresql`")
        return Path(found).resolve().parent
    return candidates[-1].parent


def find_free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _as_service_user(command: list[str]) -> list[str]:
    """PostgreSQL will not run as root: drop to the postgres system user when we are root."""
    if os.geteuid() != 0:
        return command
    return ["runuser", "-u", SERVICE_USER, "--", *command]


def _hand_over(path: Path) -> None:
    if os.geteuid() == 0:
        shutil.chown(path, SERVICE_USER, SERVICE_USER)


@dataclass
class Postgres:
    bin_dir: Path
    data_dir: Path
    port: int
    password: str

    @property
    def uri(self) -> str:
        return f"postgresql+psycopg2://{DB_USER}:{self.password}@127.0.0.1:{self.port}/{DATABASE}"

    def pg_ctl(self, *args: str) -> subprocess.CompletedProcess:
        return subprocess.run(_as_service_user([str(self.bin_dir / "pg_ctl"), "-D", str(self.data_dir), *args]),
                              capture_output=True, text=True, check=True)


def init_cluster(root: Path, bin_dir: Path) -> tuple[Path, str]:
    """initdb a cluster under root/pgdata once; the password stays in root/password (mode 600)."""
    root.mkdir(parents=True, exist_ok=True)
    data_dir, password_path = root / "pgdata", root / "password"
    if (data_dir / "PG_VERSION").exists():
        return data_dir, password_path.read_text().strip()
    password = secrets.token_urlsafe(24)
    password_path.write_text(password + "\n")
    password_path.chmod(0o600)
    data_dir.mkdir(mode=0o700, exist_ok=True)
    _hand_over(root)
    _hand_over(data_dir)
    # initdb reads the password from a file the service user can read; removed right after.
    pwfile = root / "initdb.pw"
    pwfile.write_text(password + "\n")
    _hand_over(pwfile)
    try:
        subprocess.run(_as_service_user([str(bin_dir / "initdb"), "-D", str(data_dir), "-U", DB_USER,
                                         f"--pwfile={pwfile}", "--auth=scram-sha-256", "-E", "UTF8",
                                         "--no-instructions"]),
                       capture_output=True, text=True, check=True)
    finally:
        pwfile.unlink(missing_ok=True)
    return data_dir, password


@contextmanager
def run_postgres(root: Path, port: int) -> Iterator[Postgres]:
    """Start the cluster on 127.0.0.1:port (socket in the cluster folder), create the database, stop on exit."""
    bin_dir = find_postgres_bin()
    data_dir, password = init_cluster(Path(root), bin_dir)
    pg = Postgres(bin_dir, data_dir, port, password)
    options = f"-c listen_addresses=127.0.0.1 -p {port} -k {data_dir}"
    try:
        pg.pg_ctl("start", "-w", "-t", "60", "-l", str(data_dir / "server.log"), "-o", options)
    except subprocess.CalledProcessError as exc:
        log_path = data_dir / "server.log"
        tail = log_path.read_text()[-2000:] if log_path.exists() else ""
        raise RuntimeError(f"postgres did not start: {exc.stderr}{tail}") from exc
    try:
        conn = psycopg2.connect(host="127.0.0.1", port=port, user=DB_USER, password=password, dbname="postgres")
        conn.autocommit = True  # CREATE DATABASE refuses to run inside a transaction
        try:
            with conn.cursor() as cursor:
                cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (DATABASE,))
                if cursor.fetchone() is None:
                    cursor.execute(f"CREATE DATABASE {DATABASE}")
        finally:
            conn.close()
        yield pg
    finally:
        pg.pg_ctl("stop", "-m", "fast", "-w")


def wait_for_http(url: str, process: subprocess.Popen, timeout: float = 120.0) -> None:
    """Wait until `url` answers 200 (mlflow server's /health), or fail with its output."""
    import urllib.request

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited with code {process.returncode}")
        try:
            with urllib.request.urlopen(url, timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    raise RuntimeError(f"mlflow server did not answer at {url} within {timeout:.0f} s")


def mlflow_server_command(artifacts_dir: Path, host: str, port: int, workers: int = 1) -> list[str]:
    """`mlflow server` serving artifacts from a local folder (proxied); the backend comes from its env."""
    mlflow = Path(sys.executable).parent / "mlflow"
    return [str(mlflow), "server", "--artifacts-destination", str(artifacts_dir), "--host", host,
            "--port", str(port), "--workers", str(workers)]


def mlflow_server_env(backend_uri: str) -> dict[str, str]:
    """The child's environment: the backend URI (with its password) stays out of `ps`; no GenAI job runners."""
    return {**os.environ, "MLFLOW_BACKEND_STORE_URI": backend_uri, "MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}


@contextmanager
def run_tracking_server(root: Path, port: int, pg_port: int, host: str = "127.0.0.1",
                        log_path: Path | None = None) -> Iterator[str]:
    """PostgreSQL + mlflow server; yields the tracking URI. Everything stops on exit."""
    root = Path(root).resolve()
    artifacts = root / "artifacts"
    artifacts.mkdir(parents=True, exist_ok=True)
    with run_postgres(root, pg_port) as pg:
        out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - closed below
        process = subprocess.Popen(mlflow_server_command(artifacts, host, port), env=mlflow_server_env(pg.uri),
                                   stdout=out, stderr=subprocess.STDOUT if out else None, start_new_session=True)
        try:
            wait_for_http(f"http://{host}:{port}/health", process)
            yield f"http://{host}:{port}"
        finally:
            if process.poll() is None:
                os.killpg(process.pid, 15)
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, 9)
                    process.wait()
            if out:
                out.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--dir", type=Path, default=Path(".mlflow-server"),
                        help="cluster, password and artifact root (git-ignored)")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=5000, help="mlflow server port")
    parser.add_argument("--pg-port", type=int, default=5433, help="PostgreSQL port (loopback only)")
    args = parser.parse_args()
    try:
        with run_tracking_server(args.dir, args.port, args.pg_port, args.host) as uri:
            print(f"MLflow tracking server at {uri} (PostgreSQL on 127.0.0.1:{args.pg_port}, artifacts in "
                  f"{(args.dir / 'artifacts').resolve()}).\nPoint training at it: "
                  f"export MLFLOW_TRACKING_URI={uri}\nCtrl-C stops both.", flush=True)
            while True:
                time.sleep(3600)
    except PostgresUnavailable as exc:
        sys.exit(f"error: {exc}")
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
