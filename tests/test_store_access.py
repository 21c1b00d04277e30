"""The tracking store, checked before TensorFlow loads and created once (issue #44).

An unreachable or unwritable store is one line within seconds instead of minutes of
MLflow's retries; trainings started together on a new SQLite store all finish.
"""

from __future__ import annotations

import hashlib
import http.server
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from rnnlab.cli import main
from rnnlab.records import store_access
from rnnlab.records.store_access import (
    HTTP_DEFAULTS,
    StoreUnreachableError,
    StoreUnreadableError,
    check_store,
    create_store,
    tables_made,
)

TINY_TRAIN = [
    "task=adding",
    "task.length=10",
    "task.max_examples=64",
    "cell.units=4",
    "trainer.epochs=1",
    "trainer.verbose=0",
    "tracking.log_model=false",
    "tracking.system_metrics=false",
]

# Runs the CLI, then says on stdout whether TensorFlow was imported by the time it exited.
CLI_REPORTING_TENSORFLOW = """
import atexit, sys
atexit.register(lambda: print("tensorflow loaded:", "tensorflow" in sys.modules))
from rnnlab.cli import main
main(sys.argv[1:])
"""


def rnnlab(*arguments: str, cwd: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", CLI_REPORTING_TENSORFLOW, *arguments],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=600,
    )


def everything_under(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*"))


# --- failing fast ---------------------------------------------------------------------------


def test_a_server_that_is_down_is_one_line_within_seconds_before_tensorflow(tmp_path):
    started = time.monotonic()
    result = rnnlab("train", *TINY_TRAIN, "tracking.uri=http://127.0.0.1:9", cwd=tmp_path)
    elapsed = time.monotonic() - started
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        "rnnlab: cannot reach the tracking store http://127.0.0.1:9: connection refused"
    ]
    assert "tensorflow loaded: False" in result.stdout
    assert elapsed < 10, f"took {elapsed:.1f} s"  # loosely: MLflow's retries took 253 s


def test_an_unwritable_folder_is_one_line_and_creates_nothing(tmp_path):
    store = tmp_path / "store"
    store.mkdir()
    blocker = store / "file.txt"  # a file where a folder should be: root cannot write it
    blocker.write_text("not a folder")
    uri = f"sqlite:///{blocker}/x/mlflow.db"
    work = tmp_path / "work"  # where Hydra keeps its outputs/
    work.mkdir()
    result = rnnlab("train", *TINY_TRAIN, f"tracking.uri={uri}", cwd=work)
    assert result.returncode == 1, result.stderr[-2000:]
    assert result.stderr.strip().splitlines() == [
        f"rnnlab: cannot reach the tracking store {uri}: "
        f"{blocker} is a file, so no folder can be made in it"
    ]
    assert "tensorflow loaded: False" in result.stdout
    assert everything_under(store) == [blocker]
    assert blocker.read_text() == "not a folder"


def test_a_folder_the_kernel_refuses_is_one_line():
    # /proc takes no new files, even from root, whatever its permission bits say.
    with pytest.raises(StoreUnreachableError, match=r"^cannot reach the tracking store .*/proc"):
        check_store("sqlite:////proc/rnnlab-test/mlflow.db")
    assert not Path("/proc/rnnlab-test").exists()


def test_a_read_only_database_file_is_reported(tmp_path):
    database = tmp_path / "mlflow.db"
    database.write_bytes(b"")
    database.chmod(0o400)
    if os.access(database, os.W_OK):
        pytest.skip("running as root: permission bits do not stop writes")
    with pytest.raises(StoreUnreachableError, match="is read-only"):
        check_store(f"sqlite:///{database}")


@pytest.mark.parametrize(
    ("uri", "cause"),
    [
        ("ftp://x", "unknown scheme 'ftp'"),
        ("", "the URI is empty; set tracking.uri"),
        ("sqlite://relative.db", "a SQLite URI is sqlite:///PATH"),
        ("http://", "no host in the URI"),
    ],
)
def test_a_uri_no_store_has_is_one_line(uri, cause, capsys):
    with pytest.raises(SystemExit) as exit_:
        main(["report", "smoke", f"tracking.uri={uri}"])
    message = str(exit_.value.code)
    assert message.startswith(f"rnnlab: cannot reach the tracking store {uri or repr(uri)}: ")
    assert cause in message
    assert "\n" not in message


def test_reading_commands_do_not_need_a_writable_folder(tmp_path):
    blocker = tmp_path / "file.txt"
    blocker.write_text("")
    check_store(f"sqlite:///{blocker}/mlflow.db", write=False)  # MLflow will say what's missing
    with pytest.raises(StoreUnreachableError):
        check_store(f"sqlite:///{blocker}/mlflow.db")


def test_a_fresh_path_passes_and_the_check_creates_nothing(tmp_path):
    check_store(f"sqlite:///{tmp_path}/new/deeper/mlflow.db")
    check_store(str(tmp_path / "file_store"))  # a folder of MLflow's file store
    check_store(f"file://{tmp_path}/file_store")
    assert everything_under(tmp_path) == []


class Health(http.server.BaseHTTPRequestHandler):
    status = 200

    def do_GET(self) -> None:  # noqa: N802 (the standard library's name)
        self.send_response(self.status if self.path == "/health" else 404)
        self.end_headers()
        self.wfile.write(b"OK")

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def server():
    """An HTTP server on a free port whose /health answers Health.status."""
    httpd = http.server.HTTPServer(("127.0.0.1", 0), Health)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()
    httpd.server_close()


def test_a_server_that_answers_health_passes_and_mlflow_retries_are_cut(server, monkeypatch):
    for name in HTTP_DEFAULTS:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_TIMEOUT", "77")  # the user's own setting stands
    check_store(server)
    assert (
        os.environ["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
        == HTTP_DEFAULTS["MLFLOW_HTTP_REQUEST_MAX_RETRIES"]
    )
    assert os.environ["MLFLOW_HTTP_REQUEST_TIMEOUT"] == "77"


def test_a_server_that_is_not_mlflow_is_one_line(server, monkeypatch):
    monkeypatch.setattr(Health, "status", 503)
    with pytest.raises(StoreUnreachableError, match=r"/health answered HTTP 503"):
        check_store(server)


def test_a_database_server_that_is_down_is_one_line_without_its_password():
    started = time.monotonic()
    with pytest.raises(StoreUnreachableError) as error:
        check_store("postgresql://user:secret@127.0.0.1:9/mlflow")
    assert str(error.value) == (
        "cannot reach the tracking store postgresql://user:***@127.0.0.1:9/mlflow: "
        "connection refused"
    )
    assert time.monotonic() - started < 5


def test_a_port_that_is_no_number_is_one_line():
    with pytest.raises(StoreUnreachableError, match="port could not be cast"):
        check_store("http://localhost:abc")


def test_a_silent_host_times_out_in_seconds(monkeypatch):
    monkeypatch.setattr(store_access, "CONNECT_SECONDS", 0.5)
    started = time.monotonic()
    # 10.255.255.1 routes nowhere on most networks; a network that refuses it is fine too.
    with pytest.raises(StoreUnreachableError):
        check_store("http://10.255.255.1:5000")
    assert time.monotonic() - started < 3


# --- creating a new store once -------------------------------------------------------------


def test_processes_racing_on_a_new_store_create_its_tables_once(tmp_path):
    # Without the lock, 3 of 4 such processes crashed in MLflow's migrations.
    uri = f"sqlite:///{tmp_path}/store/mlflow.db"
    script = "import sys; from rnnlab.records import store_access as s; s.create_store(sys.argv[1])"
    workers = [
        subprocess.Popen([sys.executable, "-c", script, uri], stderr=subprocess.PIPE, text=True)
        for _ in range(4)
    ]
    errors = [worker.communicate(timeout=300)[1] for worker in workers]
    assert [worker.returncode for worker in workers] == [0, 0, 0, 0], errors
    assert tables_made(tmp_path / "store" / "mlflow.db")
    assert (tmp_path / "store" / "mlflow.db.create.lock").exists()


# --- a store that is no readable database ---------------------------------------------------


@pytest.fixture(scope="module")
def mlflow_store(tmp_path_factory) -> Path:
    """A real MLflow SQLite store, made once: the good file the broken ones are cut from."""
    database = tmp_path_factory.mktemp("good") / "mlflow.db"
    create_store(f"sqlite:///{database}")
    return database


def broken_store(kind: str, good: Path, folder: Path) -> Path:
    database = folder / "mlflow.db"
    if kind == "truncated":  # a copy cut short, as `head -c 1000 good.db > bad.db` makes
        database.write_bytes(good.read_bytes()[:1000])
    elif kind == "text":  # another kind of file under the store's name
        database.write_text("experiment,run\nadding,1\n")
    else:  # the right length, one page in the middle overwritten
        data = bytearray(good.read_bytes())
        data[3 * 4096 : 5 * 4096] = b"\xff" * (2 * 4096)
        database.write_bytes(bytes(data))
    return database


def digest(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.mark.parametrize("kind", ["truncated", "text"])
@pytest.mark.parametrize(
    "command",
    [
        ["train", *TINY_TRAIN],
        ["predict", "0123456789abcdef0123456789abcdef", "1"],
        ["report", "smoke"],
    ],
    ids=["train", "predict", "report"],
)
def test_a_broken_sqlite_store_is_one_line_naming_it_and_left_as_it_was(
    kind, command, mlflow_store, tmp_path
):
    database = broken_store(kind, mlflow_store, tmp_path)
    before = digest(database)
    result = rnnlab(*command, f"tracking.uri=sqlite:///{database}", cwd=tmp_path)
    assert result.returncode == 1, result.stderr[-2000:]
    [line] = result.stderr.strip().splitlines()
    assert line.startswith(
        f"rnnlab: the tracking store {database} is not a readable SQLite database ("
    )
    assert "tensorflow loaded: False" in result.stdout
    assert digest(database) == before
    beside = [path.name for path in tmp_path.iterdir() if path.name.startswith("mlflow.db")]
    assert beside == ["mlflow.db"]  # no journal, no lock: the check only read it


def test_a_corrupt_page_is_found_by_sqlites_check_in_one_line(mlflow_store, tmp_path):
    database = broken_store("corrupt page", mlflow_store, tmp_path)
    assert database.stat().st_size == mlflow_store.stat().st_size  # only the check sees it
    before = digest(database)
    with pytest.raises(StoreUnreadableError, match="not a readable SQLite database") as caught:
        check_store(f"sqlite:///{database}", write=False)
    assert "\n" not in str(caught.value)
    assert digest(database) == before


def test_a_good_or_empty_store_passes_the_check_unchanged(mlflow_store, tmp_path):
    before = digest(mlflow_store)
    check_store(f"sqlite:///{mlflow_store}")
    assert digest(mlflow_store) == before
    empty = tmp_path / "mlflow.db"
    empty.touch()  # SQLite's empty database: MLflow makes its tables in it
    check_store(f"sqlite:///{empty}")
    assert empty.stat().st_size == 0


def test_tables_made_is_false_for_no_file_or_not_mlflow(tmp_path):
    assert not tables_made(tmp_path / "absent.db")
    (tmp_path / "other.db").write_bytes(b"not a database at all")
    assert not tables_made(tmp_path / "other.db")


@pytest.mark.slow
def test_four_trainings_started_together_on_a_new_store_all_finish(tmp_path):
    from mlflow import MlflowClient

    uri = f"sqlite:///{tmp_path}/new/mlflow.db"
    processes = [
        subprocess.Popen(
            [sys.executable, "-m", "rnnlab.cli", "train", *TINY_TRAIN, f"tracking.uri={uri}"],
            cwd=tmp_path,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for _ in range(4)
    ]
    outputs = [process.communicate(timeout=600) for process in processes]
    for process, (_, stderr) in zip(processes, outputs, strict=True):
        assert process.returncode == 0, stderr[-3000:]
    client = MlflowClient(uri)
    experiments = [experiment.experiment_id for experiment in client.search_experiments()]
    runs = client.search_runs(experiments)
    assert [run.info.status for run in runs] == ["FINISHED"] * 4
