"""``edgesearch pooler``: PgBouncer's configuration, bad options, and a study run through a real PgBouncer.

The rendering and the bad-option cases need neither server; the rest starts the real command (and
so a real PgBouncer, as ``nobody`` when the tests run as root) in front of the test PostgreSQL.
"""

from __future__ import annotations

import configparser
import json
import os
import re
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optuna
import psycopg
import pytest
import yaml
from psycopg import sql
from sqlalchemy.engine import make_url
from typer.testing import CliRunner

from devtools.pooler import pgbouncer_pids, running_pooler
from devtools.ports import free_port
from devtools.postgres import connect_params
from edgesearch.cli import app
from edgesearch.errors import ConfigError, UserError
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import FINISHED, create_study
from edgesearch.services.pgbouncer_config import PoolerFiles, pgbouncer_files, run_as_user, write_pooler_files
from edgesearch.services.pgbouncer_target import find_password, pgpass_password, server_target
from edgesearch.services.pooler import INSTALL_HINT, find_pgbouncer, serve
from tests.helpers import tiny_study

PASSWORD = 'p@ss:w"rd %x'
"""A password with every character that a URL, a pgpass line or the userlist must escape."""
QUOTED = "p%40ss%3Aw%22rd%20%25x"
"""The same, URL-encoded."""

IS_ROOT = os.geteuid() == 0

pytestmark = pytest.mark.filterwarnings("ignore:Heartbeat of storage:UserWarning")


def render(url: str = "postgresql://alice@db-host:5433/edge", **options: Any) -> PoolerFiles:
    kwargs: dict[str, Any] = {"listen_addr": "127.0.0.1", "listen_port": 6432, "pool_size": 20}
    kwargs.update(max_client_conn=1000, folder=Path("/srv/pooler"), password=None)
    kwargs.update(options)
    return pgbouncer_files(url, **kwargs)


def ini_of(files: PoolerFiles) -> configparser.ConfigParser:
    parser = configparser.ConfigParser(interpolation=None)
    parser.read_string(files.ini)
    return parser


# --------------------------------------------------------------------------- rendering


def test_the_config_pools_per_transaction_on_at_most_pool_size_server_connections() -> None:
    ini = ini_of(render(pool_size=7, max_client_conn=900, password="secret"))
    bouncer = ini["pgbouncer"]

    assert ini["databases"]["edge"] == "host=db-host port=5433 dbname=edge"
    assert bouncer["pool_mode"] == "transaction"
    assert bouncer["default_pool_size"] == bouncer["max_db_connections"] == "7"
    assert bouncer["reserve_pool_size"] == "0"
    assert bouncer["max_client_conn"] == "900"
    assert bouncer["server_reset_query"] == "" and bouncer["unix_socket_dir"] == ""
    assert bouncer["client_idle_timeout"] == "0"
    assert int(bouncer["query_wait_timeout"]) >= 60
    assert bouncer["auth_type"] == "scram-sha-256"
    assert bouncer["auth_file"] == "/srv/pooler/userlist.txt"
    assert bouncer["logfile"] == "/srv/pooler/pgbouncer.log" and bouncer["pidfile"] == "/srv/pooler/pgbouncer.pid"
    assert (bouncer["listen_addr"], bouncer["listen_port"]) == ("127.0.0.1", "6432")


def test_the_password_is_in_the_userlist_only_and_workers_get_a_url_without_it() -> None:
    files = render(f"postgresql://alice:{QUOTED}@db-host/edge", listen_addr="10.1.2.3", listen_port=7000)

    assert files.userlist == '"alice" "p@ss:w""rd %x"\n'
    assert PASSWORD not in files.ini and QUOTED not in files.ini
    assert files.client_url == "postgresql+psycopg://alice@10.1.2.3:7000/edge"
    assert ini_of(files)["databases"]["edge"] == "host=db-host port=5432 dbname=edge"


def test_the_urls_password_wins_over_one_found_elsewhere() -> None:
    assert render("postgresql://alice:fromurl@h/edge", password="fromenv").userlist == '"alice" "fromurl"\n'
    assert render("postgresql://alice@h/edge", password="fromenv").userlist == '"alice" "fromenv"\n'


def test_a_database_without_password_gets_a_pooler_without_one() -> None:
    files = render(password=None)
    assert files.auth_type == "trust" and ini_of(files)["pgbouncer"]["auth_type"] == "trust"
    assert files.userlist == '"alice" ""\n'  # PgBouncer still wants the user listed


def test_listening_on_every_address_tells_workers_this_machines_name() -> None:
    assert render(listen_addr="0.0.0.0").client_url == f"postgresql+psycopg://alice@{socket.gethostname()}:6432/edge"
    assert render(listen_addr="::1").client_url == "postgresql+psycopg://alice@[::1]:6432/edge"


def test_server_tls_settings_of_the_url_reach_pgbouncers_server_side() -> None:
    url = "postgresql://alice@h/edge?sslmode=verify-full&sslrootcert=/etc/ssl/db.pem&connect_timeout=5"
    ini = ini_of(render(url))
    assert ini["pgbouncer"]["server_tls_sslmode"] == "verify-full"
    assert ini["pgbouncer"]["server_tls_ca_file"] == "/etc/ssl/db.pem"
    assert ini["databases"]["edge"] == "host=h port=5432 dbname=edge connect_timeout=5"


def test_the_files_are_private_to_their_owner(tmp_path: Path) -> None:
    folder = tmp_path / "pooler"
    folder.mkdir(mode=0o755)
    os.chmod(folder, 0o755)  # a folder made earlier, open to others: closed before the secret goes in

    ini = write_pooler_files(render(password="secret", folder=folder), folder, owner=None)

    assert ini == folder / "pgbouncer.ini"
    assert folder.stat().st_mode & 0o777 == 0o700
    assert {p.name: p.stat().st_mode & 0o777 for p in folder.iterdir()} == {
        "pgbouncer.ini": 0o600,
        "userlist.txt": 0o600,
    }
    assert (folder / "userlist.txt").read_text() == '"alice" "secret"\n'


@pytest.mark.parametrize(
    ("line", "expected"),
    [
        ("db-host:5433:edge:alice:secret", "secret"),
        ("*:*:*:*:any", "any"),
        ("db-host:5433:*:alice:for-every-db", "for-every-db"),
        ("other:5433:edge:alice:no\ndb-host:5433:edge:alice:second", "second"),
        ("db-host:5433:edge:alice:first\n*:*:*:*:later", "first"),
        ("db-host:5432:edge:alice:other-port", None),
        ("db-host:5433:edge:bob:other-user", None),
        ("# db-host:5433:edge:alice:commented", None),
        (r"db-host:5433:edge:alice:with\:colon\\back", "with:colon\\back"),
        ("db-host:5433:edge:alice:raw:colon", "raw:colon"),
        ("db-host:5433:edge:alice", None),
    ],
)
def test_a_pgpass_file_is_read_as_libpq_reads_it(line: str, expected: str | None) -> None:
    assert pgpass_password(line, host="db-host", port=5433, database="edge", user="alice") == expected


def test_the_password_comes_from_the_url_then_pgpassword_then_the_pgpass_file(tmp_path: Path) -> None:
    passfile = tmp_path / "pgpass"
    passfile.write_text("db-host:5432:edge:alice:from-file\n")
    passfile.chmod(0o600)
    bare, with_password = (
        server_target("postgresql://alice@db-host/edge"),
        server_target("postgresql://alice:u@db-host/edge"),
    )
    env = {"PGPASSFILE": str(passfile), "PGPASSWORD": "from-env"}

    assert find_password(with_password, env) == "u"
    assert find_password(bare, env) == "from-env"
    assert find_password(bare, {"PGPASSFILE": str(passfile)}) == "from-file"
    passfile.chmod(0o640)  # libpq ignores a pgpass file that others may read, and so do we
    assert find_password(bare, {"PGPASSFILE": str(passfile)}) is None


def test_the_library_refuses_what_the_cli_refuses() -> None:
    with pytest.raises(ConfigError, match=r"--pool-size 1 is not allowed; allowed: 2 to 1000"):
        render(pool_size=1)
    with pytest.raises(ConfigError, match=r"--port 70000 is not allowed; allowed: 1 to 65535"):
        render(listen_port=70000)


def test_without_pgbouncer_the_message_says_how_to_install_it(tmp_path: Path) -> None:
    with pytest.raises(UserError, match=re.escape(INSTALL_HINT)):
        find_pgbouncer(str(tmp_path), also=())


def test_pgbouncer_runs_as_nobody_under_root_and_as_the_caller_otherwise() -> None:
    assert run_as_user(None, is_root=True) == "nobody"
    assert run_as_user(None, is_root=False) is None
    with pytest.raises(ConfigError, match="--user nobody: only root"):
        run_as_user("nobody", is_root=False)


# --------------------------------------------------------------------------- bad input -> exit 2


@dataclass(frozen=True)
class Case:
    id: str
    args: Callable[[Path], list[str]]
    expect: tuple[str, ...]
    root_only: bool = False
    env: dict[str, str] = field(default_factory=dict)


NOWHERE = "postgresql://alice@127.0.0.1:1/edge"
"""Valid, and never contacted: every case fails before the server check."""


def pooler(*args: str, storage: str = NOWHERE) -> Callable[[Path], list[str]]:
    return lambda tmp: ["pooler", "--storage", storage, *(a.replace("{tmp}", str(tmp)) for a in args)]


def file_at(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / name).write_text("not a folder")
        return ["pooler", "--storage", NOWHERE, "--folder", str(tmp / name)]

    return build


def folder_with(name: str) -> Callable[[Path], list[str]]:
    def build(tmp: Path) -> list[str]:
        (tmp / "mine").mkdir()
        (tmp / "mine" / name).write_text("someone's file")
        return ["pooler", "--storage", NOWHERE, "--folder", str(tmp / "mine")]

    return build


BAD_INPUT = [
    Case("default-storage-is-sqlite", lambda tmp: ["pooler"], ("--storage", "sqlite:///edgesearch.db", "PostgreSQL")),
    Case("sqlite-storage", pooler(storage="sqlite:///{tmp}/s.db"), ("--storage", "PostgreSQL")),
    Case(
        "env-storage-sqlite",
        lambda tmp: ["pooler"],
        ("--storage", "sqlite:///x.db"),
        env={"EDGESEARCH_STORAGE": "sqlite:///x.db"},
    ),
    Case("not-a-url", pooler(storage="db-host:5432"), ("--storage", "not a database URL")),
    Case("mysql-storage", pooler(storage="mysql://u@h/db"), ("--storage", "PostgreSQL", "'mysql'")),
    Case("no-database", pooler(storage="postgresql://alice@db-host:5432"), ("--storage", "names no database")),
    Case("no-user", pooler(storage="postgresql://db-host:5432/edge"), ("--storage", "names no user")),
    Case("no-host", pooler(storage="postgresql://alice@/edge"), ("--storage", "names no host")),
    Case(
        "password-not-shown",
        pooler(storage=f"postgresql://alice:{QUOTED}@db-host/edge?options=-cx%3D1"),
        ("--storage", "alice:***@db-host", "options", "allowed: password, sslmode"),
    ),
    Case("bad-sslmode", pooler(storage=NOWHERE + "?sslmode=maybe"), ("sslmode 'maybe'", "verify-full")),
    Case("database-name-with-space", pooler(storage="postgresql://alice@h/my%20db"), ("database 'my db'", "letters")),
    Case("listen-a-name", pooler("--listen", "db.example.org"), ("--listen 'db.example.org'", "allowed", "0.0.0.0")),
    Case("listen-empty", pooler("--listen", ""), ("--listen ''", "allowed")),
    Case("port-zero", pooler("--port", "0"), ("--port 0", "allowed: 1 to 65535")),
    Case("port-too-high", pooler("--port", "65536"), ("--port 65536", "allowed: 1 to 65535")),
    Case("pool-size-one", pooler("--pool-size", "1"), ("--pool-size 1", "allowed: 2 to 1000")),
    Case("pool-size-too-big", pooler("--pool-size", "1001"), ("--pool-size 1001", "allowed: 2 to 1000")),
    Case("max-clients-zero", pooler("--max-clients", "0"), ("--max-clients 0", "allowed: 1 to 100000")),
    Case("user-unknown", pooler("--user", "no_such_user_here"), ("--user", "no_such_user_here")),
    Case("user-root", pooler("--user", "root"), ("--user root",)),
    Case("folder-is-a-file", file_at("taken"), ("--folder", "taken", "not a folder")),
    Case("folder-of-other-files", folder_with("notes.txt"), ("--folder", "holds other files (notes.txt)")),
    Case(
        "folder-out-of-reach",
        pooler("--folder", "{tmp}/private/pooler"),
        ("--folder", "nobody", "cannot enter", "{tmp}/private"),
        root_only=True,
    ),
]


@pytest.mark.parametrize("case", BAD_INPUT, ids=[c.id for c in BAD_INPUT])
def test_bad_options_exit_2_naming_the_option_and_write_nothing(
    case: Case, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    if case.root_only and not IS_ROOT:
        pytest.skip("only root hands the files to another user")
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("EDGESEARCH_STORAGE", raising=False)
    (tmp_path / "private").mkdir(mode=0o700)
    args = case.args(tmp_path)
    before = sorted(tmp_path.rglob("*"))

    result = CliRunner().invoke(app, args, env=case.env)

    shown = f"args: {args}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr}"
    assert result.exit_code == 2, shown
    assert "Traceback" not in result.stderr + result.stdout, shown
    for expected in case.expect:
        assert expected.replace("{tmp}", str(tmp_path)) in result.stderr, f"missing {expected!r}\n{shown}"
    assert PASSWORD not in result.stderr + result.stdout and QUOTED not in result.stderr + result.stdout
    assert sorted(tmp_path.rglob("*")) == before, f"files were written\n{shown}"


def test_serve_called_from_python_raises_the_config_error_before_saying_or_writing_anything(tmp_path: Path) -> None:
    said: list[str] = []
    with pytest.raises(ConfigError, match=r"--pool-size 1 is not allowed; allowed: 2 to 1000"):
        serve(NOWHERE, pool_size=1, folder=tmp_path / "pooler", say=said.append, warn=said.append)
    assert said == []
    assert list(tmp_path.iterdir()) == []


# --------------------------------------------------------------------------- the real command


@pytest.fixture
def password_role(postgres_url: str) -> Iterator[tuple[str, str]]:
    """A login role with :data:`PASSWORD` on the test server (trust auth there, so the pooler's own check
    is what refuses a wrong one); the storage URL that logs in as it, and its name."""
    name = f"es_pool_{uuid.uuid4().hex[:12]}"
    url = make_url(postgres_url)
    admin = psycopg.connect(autocommit=True, **connect_params(postgres_url))
    with admin:
        admin.execute(sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(sql.Identifier(name), sql.Literal(PASSWORD)))
        try:
            yield (
                url.set(username=name, password=None).render_as_string().replace(f"{name}@", f"{name}:{QUOTED}@"),
                name,
            )
        finally:
            admin.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


@pytest.mark.slow
def test_the_pooler_lets_in_the_right_password_only_and_never_shows_it(
    password_role: tuple[str, str], tmp_path: Path
) -> None:
    storage, role = password_role
    database = make_url(storage).database

    with running_pooler(storage, tmp_path, "--pool-size", "2") as pooler:
        login = {"host": "127.0.0.1", "port": pooler.port, "dbname": database, "user": role, "connect_timeout": 10}
        with psycopg.connect(password=PASSWORD, **login) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (role,)
        with pytest.raises(psycopg.OperationalError, match="authentication failed"):
            psycopg.connect(password="wrong", **login)
        with pytest.raises(psycopg.OperationalError):
            psycopg.connect(**login)
        # The temporary folder (ini, userlist, log, pid file) is removed once PgBouncer has read it.
        assert wait_for(lambda: not pooler.folder.exists(), within_s=30)
        pids = pgbouncer_pids(pooler.folder)
        assert len(pids) == 1
        argv = Path(f"/proc/{pids[0]}/cmdline").read_bytes().decode()
        uid = next(
            line.split()[1]
            for line in Path(f"/proc/{pids[0]}/status").read_text().splitlines()
            if line.startswith("Uid:")
        )
        assert uid != "0"  # PgBouncer refuses root: started by root, it runs as nobody
        assert pooler.stop() == 0

    shown = pooler.output()
    assert f"workers: export EDGESEARCH_STORAGE=postgresql+psycopg://{role}@127.0.0.1:{pooler.port}/{database}" in shown
    for secret in (PASSWORD, QUOTED, "p@ss"):
        assert secret not in shown and secret not in argv  # PgBouncer's log lines are in ``shown``


@pytest.mark.slow
def test_sigterm_stops_pgbouncer_and_the_pooler_exits_0(postgres_url: str, tmp_path: Path) -> None:
    with running_pooler(postgres_url, tmp_path) as pooler:
        assert len(pgbouncer_pids(pooler.folder)) == 1
        started = time.monotonic()
        assert pooler.stop() == 0, pooler.output()
        assert time.monotonic() - started < 10
        assert not pgbouncer_pids(pooler.folder)
    assert "failed" not in pooler.output()


def wait_for(condition: Callable[[], bool], *, within_s: float) -> bool:
    """Whether ``condition`` holds within ``within_s`` seconds, asked every 50 ms."""
    deadline = time.monotonic() + within_s
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


@pytest.mark.slow
def test_a_killed_pooler_takes_pgbouncer_and_the_password_with_it(
    password_role: tuple[str, str], tmp_path: Path
) -> None:
    storage, role = password_role
    login = {"host": "127.0.0.1", "dbname": make_url(storage).database, "user": role, "password": PASSWORD}

    with running_pooler(storage, tmp_path) as pooler:
        userlist = pooler.folder / "userlist.txt"
        assert wait_for(lambda: not userlist.exists(), within_s=30), "the password stays on disk while it runs"
        with psycopg.connect(port=pooler.port, **login) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (role,)
        pooler.proc.kill()
        pooler.proc.wait(timeout=30)
        assert wait_for(lambda: not pgbouncer_pids(pooler.folder), within_s=30), "PgBouncer outlived the pooler"
    assert not pooler.folder.exists(), "the killed pooler's temporary files outlived it"

    with running_pooler(storage, tmp_path, port=pooler.port) as again:
        with psycopg.connect(port=again.port, **login) as connection:
            assert connection.execute("SELECT current_user").fetchone() == (role,)
        assert again.stop() == 0, again.output()


@pytest.mark.slow
def test_a_pooler_that_asks_no_password_warns_when_it_listens_beyond_loopback(
    postgres_url: str, tmp_path: Path
) -> None:
    database = make_url(postgres_url).database
    with running_pooler(postgres_url, tmp_path, "--listen", "0.0.0.0") as pooler:
        assert pooler.stop() == 0
    out, err = pooler.stdout.read_text(), pooler.stderr.read_text()
    assert "warning: the database asks no password, so neither does the pooler" in err
    assert f"@{socket.gethostname()}:{pooler.port}/{database}" in out  # the name other machines use


@pytest.mark.slow
def test_a_server_that_cannot_be_used_is_one_line_at_start(postgres_url: str, tmp_path: Path) -> None:
    missing = make_url(postgres_url).set(database="no_such_database").render_as_string()
    too_big = ["pooler", "--storage", postgres_url, "--pool-size", "1000", "--port", str(free_port())]
    runner = CliRunner()

    unknown = runner.invoke(app, ["pooler", "--storage", missing, "--port", str(free_port())])
    greedy = runner.invoke(app, too_big)

    assert unknown.exit_code == 2 and "cannot connect" in unknown.stderr, unknown.stderr
    assert '"no_such_database" does not exist' in unknown.stderr
    assert greedy.exit_code == 2 and "--pool-size 1000" in greedy.stderr and "max_connections" in greedy.stderr


# Eight worker processes, forked from one parent and released together. Each runs run_worker with a
# stand-in trial that sleeps instead of training, so the test exercises the coordination through the
# pooler alone; its run folder is created exclusively, so a trial run twice fails there. Each prints one
# JSON line, and the parent one with every exit code. Before the fork the parent runs one trial of the
# same study on a SQLite file of its own: everything the worker path imports on first use (torch, alembic,
# the samplers) is then imported once, not by eight children at a time on a small machine.
WORKERS = """
import json, multiprocessing, os, sys, time
from pathlib import Path
from optuna.trial import TrialState
from edgesearch.searcher.run.trial import TrialOutcome
from edgesearch.searcher.study.config import StudyConfig
from edgesearch.searcher.study.studies import create_study
from edgesearch.searcher.run.worker import run_worker
import sqlalchemy.dialects.postgresql.psycopg

name, url, count, runs, study_file = sys.argv[1], sys.argv[2], int(sys.argv[3]), Path(sys.argv[4]), sys.argv[5]

def stand_in(trial, config, *, runs_dir, artifact_store, callbacks):
    run_dir = runs_dir / f"trial-{trial.number}"
    run_dir.mkdir(parents=True, exist_ok=False)
    trial.set_user_attr("run_dir", str(run_dir))
    time.sleep(0.3)
    trial.report(0.5, step=1)
    return TrialOutcome(trial.number, TrialState.COMPLETE, 0.5 + trial.number / 1000, 1)

def work(index, go):
    go.wait()
    summary = run_worker(name, url, runs_dir=runs, trial_runner=stand_in, poll_seconds=0.2)
    line = json.dumps({"worker": index, "stopped": summary.stopped_because, "ran": len(summary.outcomes)})
    os.write(1, (line + "\\n").encode())

warm = f"sqlite:///{runs}/warm-up.db"
runs.mkdir(parents=True)
create_study(StudyConfig.from_yaml(Path(study_file)), warm)
run_worker(name, warm, max_trials=1, runs_dir=runs / "warm-up", trial_runner=stand_in)

context = multiprocessing.get_context("fork")
go = context.Event()
processes = [context.Process(target=work, args=(index, go)) for index in range(count)]
for process in processes:
    process.start()
go.set()
for process in processes:
    process.join()
print(json.dumps({"exit_codes": [process.exitcode for process in processes]}), flush=True)
"""


class ServerConnections:
    """Samples, every few milliseconds, how many server connections the test database has (all of them
    PgBouncer's, but the sampler's own)."""

    def __init__(self, direct_url: str) -> None:
        url = make_url(direct_url)
        self.database = url.database
        self.connection = psycopg.connect(autocommit=True, **connect_params(direct_url, dbname="postgres"))
        self.counts: list[int] = []
        self.done = threading.Event()
        self.thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        query = "SELECT count(*) FROM pg_stat_activity WHERE datname = %s AND backend_type = 'client backend'"
        while not self.done.is_set():
            row = self.connection.execute(query, (self.database,)).fetchone()
            self.counts.append(int(row[0]) if row else 0)
            self.done.wait(0.01)

    def __enter__(self) -> ServerConnections:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.done.set()
        self.thread.join(timeout=10)
        self.connection.close()


@pytest.mark.slow
def test_eight_workers_through_the_pooler_run_exactly_n_trials_on_at_most_pool_size_server_connections(
    postgres_url: str, tmp_path: Path
) -> None:
    n_trials, n_workers, pool_size = 16, 8, 4
    path = tmp_path / "pooled.yaml"
    path.write_text(yaml.safe_dump(tiny_study("pooled", n_trials=n_trials)))

    with running_pooler(postgres_url, tmp_path, "--pool-size", str(pool_size)) as pooler:
        through = re.search(r"export EDGESEARCH_STORAGE=(\S+)", pooler.stdout.read_text())
        assert through is not None
        url = through[1]
        create_study(StudyConfig.from_yaml(path), url)
        with ServerConnections(postgres_url) as server:
            run = [sys.executable, "-c", WORKERS, "pooled", url, str(n_workers), str(tmp_path / "runs"), str(path)]
            workers = subprocess.run(run, capture_output=True, text=True, timeout=240)
        assert pooler.stop() == 0, pooler.output()

    shown = f"exit {workers.returncode}\n{workers.stdout}{workers.stderr}"
    lines = [json.loads(line) for line in workers.stdout.splitlines() if line.startswith("{")]
    summaries = [line for line in lines if "worker" in line]
    assert workers.returncode == 0 and lines[-1] == {"exit_codes": [0] * n_workers}, shown
    assert sorted(s["worker"] for s in summaries) == list(range(n_workers)), shown
    assert {s["stopped"] for s in summaries} == {"study complete"}, shown
    assert sum(s["ran"] for s in summaries) == n_trials, shown
    trials = optuna.load_study(study_name="pooled", storage=postgres_url).get_trials(deepcopy=False)
    states = Counter(t.state.name for t in trials)
    assert len([t for t in trials if t.state in FINISHED]) == len(trials) == n_trials, states
    assert len({t.user_attrs["run_dir"] for t in trials}) == n_trials
    assert max(server.counts) <= pool_size, Counter(server.counts)
    assert max(server.counts) >= 1, "the sampler never saw PgBouncer's server connections"
