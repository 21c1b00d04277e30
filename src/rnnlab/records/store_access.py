"""Can this process use the tracking store, and are its tables made: asked once, early.

`check_store` runs in the CLI before TensorFlow loads. Without it an MLflow server that is
down cost 253 s of MLflow's retries and a 130-line traceback, and a store in a read-only
folder 108 s, both after TensorFlow had loaded; now either is one line within seconds:
`rnnlab: cannot reach the tracking store http://127.0.0.1:9: connection refused`.

`create_store` makes a new store's tables once. MLflow creates them when a client first
opens a store, with no lock: four trainings started together on a new SQLite file all
began MLflow's migrations, and one crashed on `duplicate column name: step`. Here the
first process creates them under a file lock beside the database while the others wait,
then find them made.

MLflow is imported only where a store is opened: the checks run before it loads.
"""

from __future__ import annotations

import contextlib
import errno
import functools
import os
import socket
import sqlite3
import ssl
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import urlsplit

from rnnlab.config import ConfigError
from rnnlab.locks import exclusive

CONNECT_SECONDS = 3.0  # a server on the network answers in far less; a dead one never does
DATABASE_PORTS = {"postgresql": 5432, "mysql": 3306, "mssql": 1433}
OTHER_SCHEMES = ("databricks", "databricks-uc", "uc")  # MLflow resolves these itself
# MLflow retries a failed request 7 times with doubling waits (about 4 minutes) and waits
# 120 s for each answer. A server that passed the check and then died should end the run in
# seconds, not minutes: 3 retries still ride out a restart (about 15 s of waits), and 30 s
# is a long time for a server to say nothing. Only defaults: a user's own settings stand.
SQLITE_HEADER = b"SQLite format 3\x00"
# quick_check reads every page: beyond this a store is judged by its header and length only,
# so the check before each command stays short.
QUICK_CHECK_BYTES = 256 * 2**20
HTTP_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "3", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


class StoreUnreachableError(ConfigError):
    """The tracking store cannot be used; the message names it and says why, in one line."""

    def __init__(self, uri: str, cause: str) -> None:
        super().__init__(f"cannot reach the tracking store {printable(uri)}: {cause}")


class StoreUnreadableError(StoreUnreachableError):
    """The SQLite file is there but is no database SQLite can read (truncated, corrupt, or
    another kind of file): the message names the file, in one line."""

    def __init__(self, database: Path, cause: str) -> None:
        ConfigError.__init__(
            self,
            f"the tracking store {database} is not a readable SQLite database "
            f"({' '.join(cause.split())})",  # quick_check's report spans lines
        )


def printable(uri: str) -> str:
    """The URI fit to print: a password in it becomes ***, an empty one ''."""
    try:
        password = urlsplit(uri).password
    except ValueError:
        password = None
    return uri.replace(f":{password}@", ":***@") if password else uri or repr(uri)


def check_store(uri: str, *, write: bool = True, existing: bool = False) -> None:
    """Raise StoreUnreachableError unless the store at `uri` answers (a server) or can be
    written (a SQLite file or a folder; `write=False` when a command only reads), within a
    few seconds. `existing=True` when the command reads runs it needs: a local store that is
    not there is a mistyped path, not a store to make (MLflow would make an empty one).
    Creates nothing."""
    scheme = urlsplit(uri).scheme.split("+", 1)[0] if "://" in uri else ""
    if not uri.strip():
        raise StoreUnreachableError(uri, "the URI is empty; set tracking.uri")
    if uri.split(":", 1)[0] in OTHER_SCHEMES:  # `databricks` alone is such a URI too
        return
    if existing:
        check_exists(uri, scheme)
    if scheme in ("http", "https"):
        check_server(uri)
        for name, value in HTTP_DEFAULTS.items():
            os.environ.setdefault(name, value)
    elif scheme == "sqlite":
        if ":///" not in uri:
            raise StoreUnreachableError(uri, "a SQLite URI is sqlite:///PATH")
        path = uri.split(":///", 1)[1]
        if path not in ("", ":memory:"):
            check_database(uri, Path(path))
        if write and path not in ("", ":memory:"):
            check_writable(uri, Path(path))
    elif scheme in DATABASE_PORTS:
        parts = urlsplit(uri)
        if parts.hostname:  # else a local socket, which the database's driver finds
            connect(uri, parts.hostname, port_of(uri, DATABASE_PORTS[scheme]))
    elif scheme == "file" or (not scheme and ":" not in uri.split("/", 1)[0]):
        if write:
            check_writable(uri, Path(urlsplit(uri).path if scheme else uri) / "x")
    else:
        raise StoreUnreachableError(
            uri,
            f"unknown scheme '{uri.split(':', 1)[0]}'; use sqlite:///PATH, http(s)://HOST:PORT, "
            "postgresql://..., or a folder",
        )


def check_exists(uri: str, scheme: str) -> None:
    """A SQLite file or a folder store is there (servers hold theirs)."""
    if scheme == "sqlite" and ":///" in uri:
        path = uri.split(":///", 1)[1]
        local = None if path in ("", ":memory:") else Path(path)
    elif scheme == "file" or (not scheme and ":" not in uri.split("/", 1)[0]):
        local = Path(urlsplit(uri).path if scheme else uri)
    else:
        return
    if local is not None and not local.exists():
        raise StoreUnreachableError(
            uri, f"{local} does not exist (a mistyped path? `rnnlab train` makes a store)"
        )


def port_of(uri: str, default: int) -> int:
    try:
        return urlsplit(uri).port or default
    except ValueError as error:  # a port that is no number, or out of range
        raise StoreUnreachableError(uri, str(error).lower()) from None


def connect(uri: str, host: str, port: int) -> None:
    try:
        socket.create_connection((host, port), timeout=CONNECT_SECONDS).close()
    except TimeoutError:
        raise StoreUnreachableError(
            uri, f"no answer from {host}:{port} within {CONNECT_SECONDS:g} s"
        ) from None
    except socket.gaierror as error:
        raise StoreUnreachableError(uri, f"unknown host {host} ({error.strerror})") from None
    except OSError as error:
        raise StoreUnreachableError(uri, reason(error)) from None


def check_server(uri: str) -> None:
    """A TCP connection, then MLflow's `/health`: a server that accepts connections but is
    not MLflow (or is still starting) is told apart from one that answers."""
    parts = urlsplit(uri)
    if not parts.hostname:
        raise StoreUnreachableError(uri, "no host in the URI")
    connect(uri, parts.hostname, port_of(uri, 443 if parts.scheme == "https" else 80))
    health = f"{uri.rstrip('/')}/health"
    try:
        with urllib.request.urlopen(  # noqa: S310 (an http(s) URL: the scheme was checked)
            health, timeout=CONNECT_SECONDS, context=tls_context()
        ) as response:
            status = response.status
    except urllib.error.HTTPError as error:
        status = error.code
    except (urllib.error.URLError, OSError) as error:
        cause = error.reason if isinstance(error, urllib.error.URLError) else error
        text = reason(cause) if isinstance(cause, OSError) else str(cause)
        raise StoreUnreachableError(uri, f"{health} did not answer ({text})") from None
    if status != 200:
        raise StoreUnreachableError(uri, f"{health} answered HTTP {status}, not an MLflow server?")


def tls_context() -> ssl.SSLContext:
    """Certificates checked as MLflow's client checks them: its own CA bundle or none at
    all when the user configured that, so a server MLflow accepts passes here too."""
    if os.environ.get("MLFLOW_TRACKING_INSECURE_TLS", "").lower() == "true":
        return ssl._create_unverified_context()  # noqa: S323 (the user turned checks off)
    return ssl.create_default_context(cafile=os.environ.get("MLFLOW_TRACKING_SERVER_CERT_PATH"))


def check_writable(uri: str, database: Path) -> None:
    """The database (or folder) can be written, or made in its folder: tried by making and
    removing a file in the nearest folder that exists, since permission bits say nothing
    to root and nothing of read-only mounts."""
    if database.exists():
        if not os.access(database, os.W_OK):
            raise StoreUnreachableError(uri, f"{database} is read-only")
        return
    folder = database.parent
    while not folder.exists() and folder != folder.parent:
        folder = folder.parent
    if not folder.is_dir():
        raise StoreUnreachableError(uri, f"{folder} is a file, so no folder can be made in it")
    try:
        with tempfile.TemporaryFile(dir=folder):
            pass
    except OSError as error:
        raise StoreUnreachableError(uri, f"cannot write in {folder} ({reason(error)})") from None


def check_database(uri: str, database: Path) -> None:
    """A SQLite file that exists is one SQLite can read: its header, its length against the
    page count the header gives, and for a store of ordinary size SQLite's `quick_check`,
    all read-only. A truncated copy or a text file under the store's name cost 60-117
    lines of MLflow's and SQLAlchemy's traceback; now it is one line naming the file."""
    if not database.is_file():
        return  # none yet (MLflow makes it), or a folder, which check_writable reports
    try:
        with database.open("rb") as file:
            header = file.read(100)
        size = database.stat().st_size
    except OSError as error:
        raise StoreUnreadableError(database, reason(error)) from None
    if size == 0:
        return  # SQLite's empty database: MLflow makes its tables
    if len(header) < 100 or not header.startswith(SQLITE_HEADER):
        raise StoreUnreadableError(database, "no SQLite header")
    page_size = int.from_bytes(header[16:18], "big")
    page_size = 65536 if page_size == 1 else page_size
    pages = int.from_bytes(header[28:32], "big")
    # The page count in the header is valid when its change counter matches (SQLite ≥ 3.7).
    if header[24:28] == header[92:96] and size < page_size * pages:
        raise StoreUnreadableError(database, f"{size} bytes where its header counts {pages} pages")
    if size > QUICK_CHECK_BYTES:
        return
    try:
        with contextlib.closing(
            sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            rows = db.execute("PRAGMA quick_check(1)").fetchall()
    except sqlite3.OperationalError as error:
        if "locked" in str(error):  # another process is writing it: it is a database
            return
        raise StoreUnreadableError(database, str(error)) from None
    except sqlite3.Error as error:
        raise StoreUnreadableError(database, str(error)) from None
    if rows != [("ok",)]:
        raise StoreUnreadableError(database, str(rows[0][0]) if rows else "quick_check failed")


def reason(error: OSError) -> str:
    """'connection refused' rather than '[Errno 111] Connection refused'."""
    if isinstance(error, ssl.SSLError):  # its errno is OpenSSL's, not the system's
        return f"TLS: {error.reason or error}"
    if error.errno is not None and error.errno in errno.errorcode:
        return os.strerror(error.errno).lower()
    return str(error) or type(error).__name__


def create_store(uri: str) -> None:
    """Make the store's tables if it has none yet, once however many processes start on it
    together: a SQLite file's under `<file>.create.lock`; any other store's by whichever
    process opens it first (the caller starts its workers after)."""
    if not uri.startswith("sqlite:///"):
        open_store(uri)
        return
    database = Path(uri.removeprefix("sqlite:///"))
    if tables_made(database):
        return
    database.parent.mkdir(parents=True, exist_ok=True)
    with exclusive(database.with_name(database.name + ".create.lock")):
        if not tables_made(database):  # the process before us may have made them
            open_store(uri)


def open_store(uri: str) -> None:
    """MLflow creates and migrates a store's tables when a client first opens it."""
    from mlflow import MlflowClient

    MlflowClient(uri).search_experiments(max_results=1)


def tables_made(database: Path) -> bool:
    """Whether MLflow has finished making this SQLite file's tables: its schema version is
    MLflow's latest. Tables alone would not do: MLflow migrates them step by step, so a
    file caught halfway has every table and an old version, which MLflow refuses."""
    if not database.is_file():
        return False
    try:
        with contextlib.closing(
            sqlite3.connect(f"{database.resolve().as_uri()}?mode=ro", uri=True)
        ) as db:
            row = db.execute("SELECT version_num FROM alembic_version").fetchone()
    except sqlite3.Error:  # no such table yet, or a file that is not a database
        return False
    return row is not None and row[0] == latest_schema()


@functools.cache
def latest_schema() -> str:
    """MLflow's newest schema revision, the one its client checks a store against."""
    from mlflow.store.db.utils import _get_latest_schema_revision

    return str(_get_latest_schema_revision())
