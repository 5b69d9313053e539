"""Security properties: a database password leaks nowhere, loaders are safe, the dashboard stays on loopback.

The password test runs every command a user runs, as real processes against the real PostgreSQL test
server (trust authentication, so a URL with any password connects), then searches every byte they
printed, wrote to disk or stored in the database for the password.
"""

from __future__ import annotations

import ast
import ipaddress
import json
import os
import re
import socket
import subprocess
import sys
import urllib.request
import zipfile
from collections.abc import Iterable, Mapping, Sequence
from contextlib import suppress
from pathlib import Path
from urllib.parse import quote, quote_plus

import optuna
import pytest
import yaml
from sqlalchemy.engine import make_url

from devtools.ports import free_port
from devtools.postgres import connect_params
from tests.deploy import dashboard
from tests.helpers import TINY_TRAINER, merge, write_folder

PASSWORD = "Pw-5ecret-XyZ"
NEEDLES = tuple(sorted({form.encode() for form in (PASSWORD, quote(PASSWORD, safe=""), quote_plus(PASSWORD))}))
PACKAGE = Path(__file__).resolve().parents[1] / "edgesearch"
OPTUNA_TABLES = (
    "studies",
    "study_user_attributes",
    "study_system_attributes",
    "trials",
    "trial_user_attributes",
    "trial_system_attributes",
    "trial_params",
    "trial_values",
    "trial_intermediate_values",
)


# --- searching for the password -------------------------------------------------------------------


def find_in_bytes(blob: bytes, needles: Sequence[bytes] = NEEDLES) -> bool:
    return any(needle in blob for needle in needles)


def find_in_files(root: Path, needles: Sequence[bytes] = NEEDLES) -> list[str]:
    """Every file under ``root`` (and every member of a zip archive, such as a .pt checkpoint) holding a needle."""
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        if find_in_bytes(data, needles):
            hits.append(str(path))
        if zipfile.is_zipfile(path):
            with zipfile.ZipFile(path) as archive:
                hits += [f"{path}!{m}" for m in archive.namelist() if find_in_bytes(archive.read(m), needles)]
    return hits


def find_in_outputs(outputs: Mapping[str, str], needles: Sequence[bytes] = NEEDLES) -> list[str]:
    return [label for label, text in outputs.items() if find_in_bytes(text.encode(), needles)]


def dump_database(url: str) -> dict[str, list[str]]:
    """Every row of every table in the database's public schema, each row cast to text."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(**connect_params(url)) as connection:
        tables = [
            row[0]
            for row in connection.execute(
                "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public'"
            )
        ]
        query = sql.SQL("SELECT t::text FROM {} AS t")
        return {table: [row[0] for row in connection.execute(query.format(sql.Identifier(table)))] for table in tables}


def test_the_password_search_finds_a_planted_password(tmp_path: Path) -> None:
    import torch

    (tmp_path / "clean").mkdir()
    (tmp_path / "clean" / "a.txt").write_text("postgresql+psycopg://postgres:***@127.0.0.1/db")
    assert find_in_files(tmp_path) == []
    nested = tmp_path / "runs" / "trial-00000"
    nested.mkdir(parents=True)
    (nested / "config.json").write_text(f'{{"storage": "postgresql://u:{PASSWORD}@h/db"}}')
    torch.save({"url": f"postgresql://u:{quote(PASSWORD, safe='')}@h/db"}, nested / "best.pt")
    hits = find_in_files(tmp_path)
    assert str(nested / "config.json") in hits
    assert any(hit.startswith(str(nested / "best.pt")) for hit in hits)
    assert find_in_outputs({"clean": "***", "leak": f"user:{PASSWORD}@host"}) == ["leak"]


# --- running the CLI as real processes ------------------------------------------------------------


def _edgesearch(args: Sequence[str], *, cwd: Path, env: Mapping[str, str] | None = None, timeout: float = 120) -> str:
    """Run ``python -m edgesearch ARGS``; returns its stdout and stderr together (the exit code is checked later)."""
    proc = subprocess.run(
        [sys.executable, "-m", "edgesearch", *args],
        cwd=cwd,
        env=dict(env or os.environ, PYTHONUNBUFFERED="1"),
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    return f"[exit {proc.returncode}]\n{proc.stdout}{proc.stderr}"


def _exit_code(output: str) -> int:
    match = re.match(r"\[exit (-?\d+)\]", output)
    assert match, output
    return int(match.group(1))


def _get(url: str) -> str:
    with urllib.request.urlopen(url, timeout=30) as response:
        body: bytes = response.read()
        assert response.status == 200, url
    return body.decode("utf-8", errors="replace")


@pytest.mark.slow
def test_a_database_password_appears_in_no_output_file_or_database_row(tmp_path: Path, postgres_url: str) -> None:
    url = make_url(postgres_url).set(password=PASSWORD).render_as_string(hide_password=False)
    unreachable = make_url(url).set(port=1).render_as_string(hide_password=False)
    assert PASSWORD in url and PASSWORD in unreachable
    name = "secret-study"
    raw = {
        "name": name,
        "n_trials": 3,
        "sampler": {"kind": "random", "seed": 0},
        "pruner": {"kind": "none"},
        "trainer": merge(TINY_TRAINER, {"data": {"synthetic": {"n_images": 16}}}),
        "space": {"loss.edge_lambda": {"low": 0.0, "high": 0.5}},
    }
    study_file = tmp_path / "study.yaml"
    study_file.write_text(yaml.safe_dump(raw))
    images = sorted((write_folder(tmp_path / "inputs", n=2, size=32) / "images").iterdir())
    runs, artifacts, report = tmp_path / "runs", tmp_path / "artifacts", tmp_path / "report"
    storage = ["--storage", url]
    folders = ["--runs-dir", str(runs), "--artifacts", str(artifacts)]
    env_storage = dict(os.environ, EDGESEARCH_STORAGE=url)

    outputs: dict[str, str] = {}

    def run(label: str, args: Sequence[str], env: Mapping[str, str] | None = None, timeout: float = 120) -> None:
        outputs[label] = _edgesearch(args, cwd=tmp_path, env=env, timeout=timeout)

    run("study create", ["study", "create", str(study_file), *storage])
    run("study run", ["study", "run", str(study_file), *storage, "--processes", "2", *folders], timeout=400)
    run("study list (EDGESEARCH_STORAGE)", ["study", "list"], env=env_storage)
    run("study show", ["study", "show", name, *storage])
    run("study best", ["study", "best", name, *storage, "--json"])
    run("study export json", ["study", "export", name, *storage, "--format", "json", "--out", str(tmp_path / "e.json")])
    run("study export csv", ["study", "export", name, *storage, "--format", "csv"])
    run("study report", ["study", "report", name, *storage, "--out", str(report), "--artifacts", str(artifacts)])
    run("study enqueue", ["study", "enqueue", name, "loss.edge_lambda=0.1", *storage])
    run("predict", ["predict", "--study", name, *map(str, images), "--out", str(tmp_path / "masks"), *storage])

    dashboard_lines: list[str] = []
    dashboard_args = [*storage, "--artifacts", str(artifacts), "--port", str(free_port())]
    with dashboard(dashboard_args, cwd=tmp_path, output=dashboard_lines) as (host, port):
        for path in ("/api/studies", "/dashboard", "/api/meta"):
            outputs[f"GET {path}"] = _get(f"http://{host}:{port}{path}")
        study_id = json.loads(outputs["GET /api/studies"])["study_summaries"][0]["study_id"]
        for path in (f"/api/studies/{study_id}", f"/csv/{study_id}"):  # trials with their attributes
            outputs[f"GET {path}"] = _get(f"http://{host}:{port}{path}")
    outputs["dashboard"] = "".join(dashboard_lines)

    run("worker on an unknown study", ["worker", "no-such-study", *storage])
    run("study create, database unreachable", ["study", "create", str(study_file), "--storage", unreachable])

    codes = {label: _exit_code(text) for label, text in outputs.items() if text.startswith("[exit ")}
    expected = {label: 0 for label in codes}
    expected.update({"worker on an unknown study": 2, "study create, database unreachable": 2})
    assert codes == expected, outputs
    assert "***" in outputs["study create"] and "***" in outputs["study create, database unreachable"]
    assert name in outputs["GET /api/studies"] and "run_dir" in outputs[f"GET /api/studies/{study_id}"]
    assert (report / "report.html").is_file() and (tmp_path / "masks").is_dir()
    assert list(runs.rglob("history.json")) and list(runs.rglob("best.pt")) and any(artifacts.iterdir())

    assert find_in_outputs(outputs) == [], {k: v for k, v in outputs.items() if k in find_in_outputs(outputs)}
    assert find_in_files(tmp_path) == []
    rows = dump_database(postgres_url)
    assert set(OPTUNA_TABLES) <= set(rows), sorted(rows)
    assert rows["trial_user_attributes"] and rows["trial_system_attributes"] and rows["study_user_attributes"]
    leaks = {table: [r for r in table_rows if find_in_bytes(r.encode())] for table, table_rows in rows.items()}
    assert {table: found for table, found in leaks.items() if found} == {}


# --- safe loaders -----------------------------------------------------------------------------------


def _sources() -> Iterable[tuple[Path, ast.Module]]:
    for path in sorted(PACKAGE.rglob("*.py")):
        yield path, ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def _aliases(tree: ast.Module, module: str) -> tuple[set[str], dict[str, str]]:
    """Names bound to ``module`` itself, and names imported from it (local name -> original name)."""
    modules: set[str] = {module}
    members: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            modules |= {a.asname or a.name for a in node.names if a.name == module}
        elif isinstance(node, ast.ImportFrom) and node.module == module:
            members |= {a.asname or a.name: a.name for a in node.names}
    return modules, members


def _used_name(node: ast.expr, modules: set[str], members: Mapping[str, str]) -> str | None:
    """``load`` for ``torch.load`` / ``torch.serialization.load`` / an imported ``load``; else None."""
    if isinstance(node, ast.Attribute):
        base = node.value
        while isinstance(base, ast.Attribute):
            base = base.value
        if isinstance(base, ast.Name) and base.id in modules:
            return node.attr
    if isinstance(node, ast.Name) and node.id in members:
        return members[node.id]
    return None


def unsafe_torch_loads(tree: ast.Module) -> tuple[int, list[int]]:
    """(number of torch.load calls, line numbers of those without ``weights_only=True``)."""
    modules, members = _aliases(tree, "torch")
    calls = [
        node
        for node in ast.walk(tree)
        if isinstance(node, ast.Call) and _used_name(node.func, modules, members) == "load"
    ]

    def safe(call: ast.Call) -> bool:
        return any(
            k.arg == "weights_only" and isinstance(k.value, ast.Constant) and k.value.value is True
            for k in call.keywords
        )

    return len(calls), [call.lineno for call in calls if not safe(call)]


_SAFE_YAML_LOADERS = {"SafeLoader", "CSafeLoader"}
_UNSAFE_YAML = {"unsafe_load", "unsafe_load_all", "full_load", "full_load_all"}
_UNSAFE_YAML |= {"Loader", "FullLoader", "UnsafeLoader", "CLoader", "CFullLoader", "CUnsafeLoader"}


def unsafe_yaml_uses(tree: ast.Module) -> list[int]:
    """Line numbers where yaml is read with anything but a SafeLoader (or a subclass of it defined here).

    ``yaml.load(text, Loader=L)`` is fine when ``L`` is ``yaml.SafeLoader`` / ``yaml.CSafeLoader`` or a class of
    this module derived from one; ``yaml.load`` without a loader, and every other loader, is not.
    """
    modules, members = _aliases(tree, "yaml")
    classes = [node for node in ast.walk(tree) if isinstance(node, ast.ClassDef)]
    safe_classes: set[str] = set()

    def is_safe_loader(node: ast.expr | None) -> bool:
        if node is None:
            return False
        name = _used_name(node, modules, members)
        return name in _SAFE_YAML_LOADERS or (isinstance(node, ast.Name) and node.id in safe_classes)

    changed = True
    while changed:  # classes derived from safe ones, in any order
        grown = {c.name for c in classes if any(is_safe_loader(base) for base in c.bases)}
        changed, safe_classes = grown != safe_classes, grown | safe_classes

    lines, allowed = [], set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Call) and _used_name(node.func, modules, members) in {"load", "load_all"}:
            loader = next((k.value for k in node.keywords if k.arg == "Loader"), None)
            loader = node.args[1] if loader is None and len(node.args) > 1 else loader
            if is_safe_loader(loader):
                allowed.add(id(node.func))
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute | ast.Name):
            name = _used_name(node, modules, members)
            if name in _UNSAFE_YAML or (name in {"load", "load_all"} and id(node) not in allowed):
                lines.append(node.lineno)
        if isinstance(node, ast.ImportFrom) and node.module == "yaml":
            lines += [node.lineno for a in node.names if a.name in _UNSAFE_YAML | {"load", "load_all"}]
    return sorted(set(lines))


def test_the_loader_scans_flag_unsafe_calls() -> None:
    code = ast.parse(
        "import torch as T\nfrom torch import load\nimport yaml\n"
        "T.load(p)\nload(p, weights_only=False)\nT.load(p, weights_only=True)\n"
        "yaml.load(s, Loader=yaml.FullLoader)\nyaml.safe_load(s)\nyaml.load(s)\n"
        "class L(yaml.SafeLoader): pass\nclass M(L): pass\n"
        "yaml.load(s, Loader=M)\nyaml.load(s, yaml.CSafeLoader)\nyaml.unsafe_load(s)\n"
    )
    assert unsafe_torch_loads(code) == (3, [4, 5])
    assert unsafe_yaml_uses(code) == [7, 9, 14]


def test_every_torch_load_passes_weights_only_true() -> None:
    total, unsafe = 0, {}
    for path, tree in _sources():
        count, lines = unsafe_torch_loads(tree)
        total += count
        if lines:
            unsafe[str(path.relative_to(PACKAGE.parent))] = lines
    assert unsafe == {}
    assert total >= 1  # the scan sees the checkpoint loaders, so an empty result means something


def test_no_unsafe_yaml_loader_is_used() -> None:
    unsafe = {
        str(path.relative_to(PACKAGE.parent)): lines for path, tree in _sources() if (lines := unsafe_yaml_uses(tree))
    }
    assert unsafe == {}


# --- the dashboard binds loopback -----------------------------------------------------------------


def _listening_addresses(port: int) -> list[str]:
    """Local addresses of the sockets listening on ``port`` (Linux /proc/net/tcp{,6}); [] elsewhere."""
    found: list[str] = []
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            address, _, hex_port = fields[1].partition(":")
            if fields[3] == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                raw = bytes.fromhex(address)
                # The kernel prints each 32-bit word in host byte order (little-endian on Linux hosts we run).
                words = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
                found.append(str(ipaddress.ip_address(words)))
    return found


def _non_loopback_addresses() -> list[str]:
    """This machine's IPv4 addresses other than loopback: its host name's, and those of its outgoing routes."""
    found: set[str] = set()
    with suppress(OSError):
        found |= {str(info[4][0]) for info in socket.getaddrinfo(socket.gethostname(), None, socket.AF_INET)}
    for probe in ("192.0.2.1", "10.255.255.255", "8.8.8.8"):  # UDP connect only picks a route; nothing is sent
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, suppress(OSError):
            s.connect((probe, 9))
            found.add(s.getsockname()[0])
    return sorted(
        a for a in found if not ipaddress.ip_address(a).is_loopback and not ipaddress.ip_address(a).is_unspecified
    )


def _connects(host: str, port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(3)
        return s.connect_ex((host, port)) == 0


@pytest.mark.slow
def test_the_dashboard_binds_loopback_by_default(tmp_path: Path) -> None:
    port = free_port()
    output: list[str] = []
    url = f"sqlite:///{tmp_path}/d.db"
    optuna.storages.RDBStorage(url)  # the dashboard opens an existing database only
    args = ["--storage", url, "--artifacts", str(tmp_path / "a"), "--port", str(port)]
    with dashboard(args, cwd=tmp_path, output=output) as (host, shown_port):
        assert (host, shown_port) == ("127.0.0.1", port), output
        assert _connects("127.0.0.1", port)
        listening = _listening_addresses(port)
        reachable_elsewhere = {a: _connects(a, port) for a in _non_loopback_addresses()}
    if Path("/proc/net/tcp").is_file():
        assert listening == ["127.0.0.1"], listening
    assert not any(reachable_elsewhere.values()), reachable_elsewhere
    assert not any("warning" in line for line in output), output
