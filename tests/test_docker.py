"""The Docker deployment (docker/, .dockerignore) agrees with the repository and with the CLI it calls.

No container is started: the files are parsed, every command a service runs goes through the
edgesearch CLI's own parser (without running it), and every path the Dockerfile copies is checked
against the repository and the build context. ``docker compose config`` runs as an extra check
where the compose plugin is installed.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import pytest
import typer
import yaml
from packaging.requirements import Requirement
from packaging.version import Version

from tests.deploy import (
    COMPOSE,
    COMPOSE_VARIABLE,
    DOCKER,
    DOCKERFILE,
    REPO,
    URL_PASSWORD,
    USAGE_ERRORS,
    command_argv,
    dockerfile_instructions,
    parse_command_line,
    substitute,
    substitute_tree,
)

ENV_EXAMPLE = DOCKER / ".env.example"
DOCKERIGNORE = REPO / ".dockerignore"

EDGESEARCH_SERVICES = ("create", "worker", "dashboard")

_REFERENCE_WITHOUT_DEFAULT = re.compile(r"\$\{[A-Za-z_][A-Za-z0-9_]*(?::?\?[^}]*)?\}")


# -- helpers ---------------------------------------------------------------------------------------


def strings(node: Any) -> Iterator[str]:
    """Every string (keys included) in parsed YAML."""
    if isinstance(node, str):
        yield node
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)


def compose_variables(node: Any) -> dict[str, bool]:
    """{variable name: whether every use of it has a default} for the variables ``node`` uses."""
    found: dict[str, bool] = {}
    for text in strings(node):
        for match in COMPOSE_VARIABLE.finditer(text):
            if match["escaped"]:
                continue
            name = match["braced"] or match["bare"]
            has_default = match["op"] in (":-", "-")
            found[name] = found.get(name, True) and has_default
    return found


def read_env_file(path: Path) -> dict[str, str]:
    """``KEY=VALUE`` lines of a compose env file (comments and blank lines skipped, quotes removed)."""
    values: dict[str, str] = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        key, sep, value = line.partition("=")
        assert sep, f"{path.name}: not KEY=VALUE: {line!r}"
        value = value.strip()
        if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
            value = value[1:-1]
        values[key.strip()] = value
    return values


def copy_sources(arguments: str) -> tuple[list[str], str]:
    """(sources, destination) of a COPY instruction, in shell or JSON form, flags removed."""
    parts = json.loads(arguments) if arguments.startswith("[") else shlex.split(arguments)
    parts = [part for part in parts if not part.startswith("--")]
    return parts[:-1], parts[-1]


def _pattern_regex(pattern: str) -> re.Pattern[str]:
    """A .dockerignore pattern (Go filepath.Match plus ``**``) as a regex over slash paths."""
    out = ""
    i = 0
    while i < len(pattern):
        if pattern.startswith("**/", i):
            out += "(?:.*/)?"
            i += 3
        elif pattern.startswith("**", i):
            out += ".*"
            i += 2
        elif pattern[i] == "*":
            out += "[^/]*"
            i += 1
        elif pattern[i] == "?":
            out += "[^/]"
            i += 1
        else:
            out += re.escape(pattern[i])
            i += 1
    return re.compile(out + r"\Z")


def dockerignored(path: str, patterns: Sequence[str]) -> bool:
    """Whether ``path`` (relative to the context) is left out of the build context.

    As in Docker: the last pattern that matches the path or one of its parent folders wins, and a
    ``!`` pattern lets a path back in.
    """
    candidates = [path.strip("/")]
    parts = candidates[0].split("/")
    candidates += ["/".join(parts[:n]) for n in range(1, len(parts))]
    excluded = False
    for pattern in patterns:
        negate = pattern.startswith("!")
        regex = _pattern_regex(pattern.lstrip("!").strip("/"))
        if any(regex.match(candidate) for candidate in candidates):
            excluded = not negate
    return excluded


def dockerignore_patterns() -> list[str]:
    lines = (line.strip() for line in DOCKERIGNORE.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def duration_seconds(text: str) -> float:
    """A compose duration such as ``10m``, ``90s`` or ``1h30m`` in seconds."""
    units = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|h|m|s)", text)
    assert parts and "".join(n + u for n, u in parts) == text, f"not a duration: {text!r}"
    return sum(float(number) * units[unit] for number, unit in parts)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def env_example() -> dict[str, str]:
    return read_env_file(ENV_EXAMPLE)


@pytest.fixture(scope="module")
def compose_raw() -> dict[str, Any]:
    data = yaml.safe_load(COMPOSE.read_text())
    assert isinstance(data, dict)
    return data


@pytest.fixture(scope="module")
def compose(compose_raw: dict[str, Any], env_example: dict[str, str]) -> dict[str, Any]:
    """compose.yaml as ``docker compose --env-file docker/.env.example`` sees it."""
    resolved = substitute_tree(compose_raw, env_example)
    assert isinstance(resolved, dict)
    return resolved


@pytest.fixture(scope="module")
def services(compose: dict[str, Any]) -> dict[str, dict[str, Any]]:
    result = compose["services"]
    assert isinstance(result, dict)
    return result


def _environment(service: Mapping[str, Any]) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        return dict(item.partition("=")[::2] for item in env)
    return {str(key): str(value) for key, value in env.items()}


def _named_volume_mounts(service: Mapping[str, Any], named: Mapping[str, Any]) -> dict[str, str]:
    """{container path: volume name} of the service's mounts of top-level named volumes."""
    mounts: dict[str, str] = {}
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            source, target = str(volume.get("source", "")), str(volume.get("target", ""))
        else:
            source, _, rest = str(volume).partition(":")
            target = rest.partition(":")[0]
        if source in named:
            mounts[target] = source
    return mounts


# -- compose.yaml: services ------------------------------------------------------------------------


def test_compose_defines_postgres_create_worker_and_dashboard(services: dict[str, dict[str, Any]]) -> None:
    assert set(services) == {"postgres", *EDGESEARCH_SERVICES}


def test_edgesearch_services_build_the_image_from_the_repository_root(services: dict[str, dict[str, Any]]) -> None:
    for name in EDGESEARCH_SERVICES:
        build = services[name]["build"]
        assert (DOCKER / build["context"]).resolve() == REPO, name
        assert (REPO / build["dockerfile"]).resolve() == DOCKERFILE, name


def test_postgres_keeps_its_data_in_a_named_volume_and_reports_health_with_pg_isready(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    postgres = services["postgres"]
    assert postgres["image"].split(":")[0] == "postgres"
    assert postgres["image"].split(":")[1].split(".")[0] == "16"
    mounts = _named_volume_mounts(postgres, compose["volumes"])
    assert mounts.get("/var/lib/postgresql/data") in compose["volumes"]
    test = postgres["healthcheck"]["test"]
    assert "pg_isready" in (test if isinstance(test, str) else " ".join(test))


def test_create_runs_once_after_postgres_is_healthy(services: dict[str, dict[str, Any]]) -> None:
    create = services["create"]
    assert command_argv(create["command"])[:2] == ["study", "create"]
    assert create["depends_on"]["postgres"]["condition"] == "service_healthy"
    assert create["restart"] == "no"


def test_workers_reserve_nvidia_gpus_and_scale_with_WORKERS(
    compose_raw: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    deploy = services["worker"]["deploy"]
    devices = deploy["resources"]["reservations"]["devices"]
    assert any(device["driver"] == "nvidia" and "gpu" in device["capabilities"] for device in devices)
    assert all(("count" in device) != ("device_ids" in device) for device in devices)
    assert re.fullmatch(r"\$\{WORKERS(:-\d+)?\}", str(compose_raw["services"]["worker"]["deploy"]["replicas"]))
    assert int(deploy["replicas"]) >= 1


def test_worker_gpus_option_names_the_gpus_it_reserved(services: dict[str, dict[str, Any]]) -> None:
    argv = command_argv(services["worker"]["command"])
    gpus = argv[argv.index("--gpus") + 1].split(",")
    assert all(gpu.strip().isdigit() for gpu in gpus)
    (device,) = services["worker"]["deploy"]["resources"]["reservations"]["devices"]
    count = device.get("count", "all")
    assert count == "all" or int(count) >= len(gpus)


def test_workers_start_after_the_study_exists(services: dict[str, dict[str, Any]]) -> None:
    for name in ("worker", "dashboard"):
        assert services[name]["depends_on"]["create"]["condition"] == "service_completed_successfully"


def test_killed_workers_come_back_and_stopped_ones_get_time_to_checkpoint(services: dict[str, dict[str, Any]]) -> None:
    worker = services["worker"]
    assert worker["restart"].startswith("on-failure")
    assert duration_seconds(worker["stop_grace_period"]) >= 60
    # SIGINT reaches the main worker process, which stops its per-GPU processes and waits for them.
    assert worker.get("stop_signal") == "SIGINT"
    assert worker.get("init") is True


def test_workers_and_dashboard_share_artifacts_and_runs_on_named_volumes(
    compose: dict[str, Any], services: dict[str, dict[str, Any]]
) -> None:
    named = compose["volumes"]
    worker, dashboard = services["worker"], services["dashboard"]
    worker_mounts = _named_volume_mounts(worker, named)
    dashboard_mounts = _named_volume_mounts(dashboard, named)

    worker_argv, dashboard_argv = command_argv(worker["command"]), command_argv(dashboard["command"])
    artifacts = _environment(worker)["EDGESEARCH_ARTIFACTS"]
    assert worker_argv[worker_argv.index("--artifacts") + 1] == artifacts
    assert dashboard_argv[dashboard_argv.index("--artifacts") + 1] == artifacts
    assert _environment(dashboard)["EDGESEARCH_ARTIFACTS"] == artifacts
    assert worker_mounts[artifacts] == dashboard_mounts[artifacts]

    runs = worker_argv[worker_argv.index("--runs-dir") + 1]
    assert runs in worker_mounts, "trial run folders (last.pt for resuming) must outlive the container"


def test_every_edgesearch_service_uses_the_shared_postgres_storage(services: dict[str, dict[str, Any]]) -> None:
    for name in EDGESEARCH_SERVICES:
        url = _environment(services[name])["EDGESEARCH_STORAGE"]
        assert re.match(r"postgresql(\+psycopg)?://[^/]+@postgres:5432/\w+$", url), (name, url)


# -- compose.yaml: commands go through the CLI's parser --------------------------------------------


@pytest.mark.parametrize("service", EDGESEARCH_SERVICES)
def test_service_command_is_accepted_by_the_edgesearch_cli(
    service: str, services: dict[str, dict[str, Any]], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the image's WORKDIR mirrors the repository's layout (studies/...)
    argv = command_argv(services[service]["command"])
    ctx = parse_command_line(argv)
    assert ctx.info_name == (argv[1] if argv[0] == "study" else argv[0])


def test_command_line_check_rejects_an_unknown_option() -> None:
    with pytest.raises(USAGE_ERRORS, match="--no-such-option"):
        parse_command_line(["worker", "lambda-search", "--gpus", "0", "--no-such-option", "1"])


def test_command_line_check_rejects_a_missing_argument() -> None:
    with pytest.raises(USAGE_ERRORS):
        parse_command_line(["worker", "--gpus", "0"])


def test_command_line_check_rejects_an_unknown_command() -> None:
    with pytest.raises(USAGE_ERRORS, match="no-such-command"):
        parse_command_line(["study", "no-such-command"])


def test_command_line_check_rejects_a_bad_value() -> None:
    with pytest.raises(USAGE_ERRORS):
        parse_command_line(["worker", "lambda-search", "--processes", "zero"])


def test_create_names_a_study_file_that_defines_the_workers_study(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    commands = [compose_raw["services"][name]["command"] for name in ("create", "worker")]
    # With the example env file, and with compose's defaults alone (an env file that sets neither).
    for env in (env_example, {}):
        create, worker = (command_argv(command) for command in substitute_tree(commands, env))
        study_file = REPO / create[2]
        assert study_file.is_file(), f"{create[2]} is not in the repository"
        assert yaml.safe_load(study_file.read_text())["name"] == worker[1]


# -- compose.yaml: secrets and exposure ------------------------------------------------------------


def test_compose_writes_no_password_literal(compose_raw: dict[str, Any]) -> None:
    for name, service in compose_raw["services"].items():
        for key, value in _environment(service).items():
            if "PASSWORD" in key.upper():
                assert _REFERENCE_WITHOUT_DEFAULT.fullmatch(value), f"{name}: {key} must be ${{VAR}}, got {value!r}"
            for match in URL_PASSWORD.finditer(value):
                password = match["password"]
                assert _REFERENCE_WITHOUT_DEFAULT.fullmatch(password), f"{name}: {key} has a password in its URL"


def test_compose_does_not_contain_the_example_password(env_example: dict[str, str]) -> None:
    placeholder = env_example["POSTGRES_PASSWORD"]
    assert placeholder
    assert placeholder not in COMPOSE.read_text()


def test_ports_are_published_on_loopback_only(compose_raw: dict[str, Any], compose: dict[str, Any]) -> None:
    for name, service in compose["services"].items():
        for port in service.get("ports", []):
            if isinstance(port, dict):
                assert port.get("host_ip") == "127.0.0.1", name
            else:
                assert str(port).startswith("127.0.0.1:"), f"{name}: {port!r} is reachable from other machines"
    assert "ports" not in compose_raw["services"]["postgres"]


def test_dashboard_listens_in_its_container_and_is_published_on_loopback_8080(
    services: dict[str, dict[str, Any]],
) -> None:
    dashboard = services["dashboard"]
    argv = command_argv(dashboard["command"])
    port = argv[argv.index("--port") + 1]
    assert argv[argv.index("--host") + 1] == "0.0.0.0"
    assert dashboard["ports"] == [f"127.0.0.1:8080:{port}"]


# -- .env.example ----------------------------------------------------------------------------------


def test_env_example_defines_every_variable_compose_requires(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    required = [name for name, has_default in compose_variables(compose_raw).items() if not has_default]
    assert required, "compose.yaml is expected to require at least the password"
    assert [name for name in required if not env_example.get(name)] == []


def test_env_example_documents_every_variable_compose_uses(
    compose_raw: dict[str, Any], env_example: dict[str, str]
) -> None:
    assert sorted(set(compose_variables(compose_raw)) - set(env_example)) == []


def test_env_example_says_to_copy_it_and_change_the_password() -> None:
    text = ENV_EXAMPLE.read_text()
    assert "copy to docker/.env and change the password" in text.lower()


def test_env_example_password_is_safe_inside_a_database_url(env_example: dict[str, str]) -> None:
    assert re.fullmatch(r"[A-Za-z0-9._~-]+", env_example["POSTGRES_PASSWORD"])


# -- Dockerfile ------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def instructions() -> list[tuple[str, str]]:
    return dockerfile_instructions(DOCKERFILE)


def _base_image(instructions: list[tuple[str, str]]) -> str:
    (base,) = [arguments.split()[0] for keyword, arguments in instructions if keyword == "FROM"]
    return base


def test_dockerfile_starts_from_a_pinned_pytorch_cuda_runtime_image(instructions: list[tuple[str, str]]) -> None:
    image, _, tag = _base_image(instructions).partition(":")
    assert image == "pytorch/pytorch"
    assert re.fullmatch(r"\d+\.\d+\.\d+-cuda\d+\.\d+-cudnn\d+-runtime", tag), tag


def test_base_image_torch_satisfies_the_package_requirement(instructions: list[tuple[str, str]]) -> None:
    torch_version = Version(_base_image(instructions).partition(":")[2].split("-")[0])
    tomllib = pytest.importorskip("tomllib", reason="reading pyproject.toml needs Python 3.11")
    dependencies = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["dependencies"]
    (torch,) = [Requirement(dep) for dep in dependencies if Requirement(dep).name == "torch"]
    assert torch.specifier.contains(torch_version), f"pip would replace the image's torch {torch_version}: {torch}"


def test_dockerfile_pins_the_image_torch_while_installing(instructions: list[tuple[str, str]]) -> None:
    installs = [args for keyword, args in instructions if keyword == "RUN" and "pip install" in args]
    with_deps = [args for args in installs if "--no-deps" not in args]
    assert with_deps, "the dependencies are installed somewhere"
    assert all("--constraint" in args or " -c " in args for args in with_deps)


def test_dockerfile_runs_as_a_non_root_user(instructions: list[tuple[str, str]]) -> None:
    keywords = [keyword for keyword, _ in instructions]
    entrypoint = keywords.index("ENTRYPOINT")
    users = [args for keyword, args in instructions[:entrypoint] if keyword == "USER"]
    assert users, "no USER before ENTRYPOINT"
    args = dict(arg.partition("=")[::2] for keyword, arg in instructions if keyword == "ARG")
    user = substitute(users[-1], args).split(":")[0]
    assert user and user not in {"root", "0"}, f"USER {users[-1]} is root"
    (useradd,) = [substitute(run, args) for keyword, run in instructions if keyword == "RUN" and "useradd" in run]
    uid = re.search(r"--uid\W+(\d+)", useradd)
    assert (uid is not None and uid[1] == user) if user.isdigit() else user in useradd.split()


def test_dockerfile_working_folder_belongs_to_the_user(instructions: list[tuple[str, str]]) -> None:
    workdir = [args for keyword, args in instructions if keyword == "WORKDIR"][-1]
    assert any(keyword == "RUN" and "chown" in args and workdir in args.split() for keyword, args in instructions)


def test_dockerfile_entrypoint_is_edgesearch_in_exec_form(instructions: list[tuple[str, str]]) -> None:
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["edgesearch"]


def test_dockerfile_default_command_prints_the_cli_help(
    instructions: list[tuple[str, str]], capsys: pytest.CaptureFixture[str]
) -> None:
    (cmd,) = [args for keyword, args in instructions if keyword == "CMD"]
    argv = json.loads(cmd)
    assert argv == ["--help"]
    with pytest.raises(typer.Exit) as exit_info:
        parse_command_line(argv)
    assert exit_info.value.exit_code == 0
    assert "worker" in capsys.readouterr().out


def test_dockerfile_sets_unbuffered_output_and_no_pip_cache(instructions: list[tuple[str, str]]) -> None:
    env = " ".join(args for keyword, args in instructions if keyword == "ENV")
    assert "PYTHONUNBUFFERED=1" in env
    assert "PIP_NO_CACHE_DIR=1" in env


def test_dockerfile_copies_the_study_files(instructions: list[tuple[str, str]]) -> None:
    copies = [copy_sources(args) for keyword, args in instructions if keyword == "COPY"]
    assert any("studies" in [source.strip("/") for source in sources] for sources, _ in copies)


def test_dockerfile_copies_dependencies_before_the_package(instructions: list[tuple[str, str]]) -> None:
    copied = [
        source.strip("/") for keyword, args in instructions if keyword == "COPY" for source in copy_sources(args)[0]
    ]
    assert copied.index("pyproject.toml") < copied.index("edgesearch")


def test_every_path_the_dockerfile_copies_exists_and_is_in_the_build_context(
    instructions: list[tuple[str, str]],
) -> None:
    patterns = dockerignore_patterns()
    for keyword, args in instructions:
        if keyword != "COPY" or "--from" in args:
            continue
        for source in copy_sources(args)[0]:
            assert (REPO / source).exists(), f"COPY {source}: not in the repository"
            assert not dockerignored(source, patterns), f"COPY {source}: left out by .dockerignore"


# -- .dockerignore ---------------------------------------------------------------------------------


def test_dockerignore_keeps_secrets_and_local_state_out_of_the_build_context() -> None:
    patterns = dockerignore_patterns()
    for path in ("docker/.env", ".git/config", ".venv/bin/python", "runs/x/last.pt", "artifacts/a", "edgesearch.db"):
        assert dockerignored(path, patterns), path
    for path in ("edgesearch/cli/app.py", "edgesearch/searcher/run/worker.py", "studies/lambda.yaml", "pyproject.toml"):
        assert not dockerignored(path, patterns), path
    assert dockerignored("edgesearch/__pycache__/cli.cpython-311.pyc", patterns)


def test_dockerignore_matching_follows_docker_rules() -> None:
    patterns = ["*", "!edgesearch", "**/__pycache__"]
    assert dockerignored("README.md", patterns)
    assert not dockerignored("edgesearch/trainer/loop.py", patterns)
    assert dockerignored("edgesearch/trainer/__pycache__/loop.pyc", patterns)
    assert not dockerignored("anything", ["*", "!anything"])


# -- the helpers themselves ------------------------------------------------------------------------


def test_substitute_follows_compose_interpolation() -> None:
    env = {"SET": "value", "EMPTY": ""}
    assert substitute("${SET} $SET ${SET:-d} ${MISSING:-d} ${EMPTY:-d} ${EMPTY-d}", env) == "value value value d d "
    assert substitute("$${SET}", env) == "${SET}"
    with pytest.raises(ValueError, match="needed"):
        substitute("${MISSING:?needed}", env)
