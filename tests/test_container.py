"""The image that docker/Dockerfile builds, run for real: the CLI, a study on PostgreSQL, a worker, SIGTERM.

``.ci/build-image.sh`` builds the Dockerfile with podman on a local stand-in of its base image; here each
command runs inside that image with ``buildah run`` (chroot isolation: the host's network, so the test
PostgreSQL at 127.0.0.1 is reachable), as the image's own non-root user, with the commands and environment
of docker/compose.yaml's services. Without a GPU, the worker's ``--gpus`` option is the one thing left out.

Locally the tests skip when podman or buildah is missing; under ``CI=true`` they fail instead. ``.ci/run``
builds the image in the background while the other tests run and points ``EDGESEARCH_TEST_IMAGE_BUILD`` at
the build's status files; without it the first test builds the image itself (minutes the first time, then
cached)::

    eval "$(.ci/build-image.sh)"
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml
from optuna.trial import FrozenTrial, TrialState

from tests.browser import wait_for
from tests.deploy import COMPOSE, REPO, command_argv, substitute_tree
from tests.helpers import TINY_TRAINER, merge, tiny_study

pytestmark = [pytest.mark.slow, pytest.mark.filterwarnings("ignore::optuna.exceptions.ExperimentalWarning")]

IMAGE_ENV = "EDGESEARCH_TEST_IMAGE"
BUILD_ENV = "EDGESEARCH_TEST_IMAGE_BUILD"
"""Prefix of the background build's files: ``.env`` (its exports), ``.log`` and ``.rc`` (written last)."""
BUILD_WAIT_S = 30 * 60
APP_UID = 1000
"""The image's user (docker/Dockerfile: APP_UID)."""


def _unavailable(message: str) -> None:
    if os.environ.get("CI") == "true":
        pytest.fail(f"the container tests are required under CI: {message}")
    pytest.skip(message)


def _exports(text: str) -> dict[str, str]:
    """``export NAME=VALUE`` lines (as the .ci scripts print them) as a dict."""
    pairs = (line.removeprefix("export ").partition("=") for line in text.splitlines() if line.startswith("export "))
    return {name: value for name, _, value in pairs}


def _built_image() -> str:
    """The image's name: built in the background by .ci/run, by an earlier ``eval``, or here."""
    if os.environ.get(IMAGE_ENV):
        return os.environ[IMAGE_ENV]
    if prefix := os.environ.get(BUILD_ENV):
        rc_file = Path(f"{prefix}.rc")
        wait_for(rc_file.exists, timeout=BUILD_WAIT_S, what="the background image build (.ci/build-image.sh)")
        log = Path(f"{prefix}.log").read_text()
        if rc_file.read_text().strip() != "0":
            pytest.fail(f".ci/build-image.sh failed:\n{log[-4000:]}")
        print(log)  # the build time and the image's size, shown with -s or on failure
        return _exports(Path(f"{prefix}.env").read_text())[IMAGE_ENV]
    built = subprocess.run([str(REPO / ".ci" / "build-image.sh")], capture_output=True, text=True, check=False)
    if built.returncode != 0:
        pytest.fail(f".ci/build-image.sh failed:\n{built.stderr[-4000:]}")
    return _exports(built.stdout)[IMAGE_ENV]


@pytest.fixture(scope="module")
def image() -> str:
    missing = [tool for tool in ("podman", "buildah") if shutil.which(tool) is None]
    if missing:
        _unavailable(f"{' and '.join(missing)} not installed: apt-get install podman buildah debootstrap")
    if os.geteuid() != 0:
        _unavailable("building and running the image needs root (podman and buildah with chroot isolation)")
    return _built_image()


@pytest.fixture
def container(image: str) -> Iterator[str]:
    """A working container of the image (``buildah from``), removed afterwards."""
    name = f"edgesearch-test-{uuid.uuid4().hex[:12]}"
    subprocess.run(["buildah", "from", "--pull=never", "--name", name, image], check=True, capture_output=True)
    yield name
    subprocess.run(["buildah", "rm", name], check=False, capture_output=True)


def _run_argv(container: str, argv: Sequence[str], env: dict[str, str], mounts: Sequence[str] = ()) -> list[str]:
    """``buildah run`` of ``argv`` in ``container``, as the image's user, with ``env`` and bind ``mounts``."""
    options = [f"--env={name}={value}" for name, value in env.items()]
    options += [f"--volume={mount}" for mount in mounts]
    return ["buildah", "run", "--isolation", "chroot", *options, container, "--", *argv]


def _run(container: str, argv: Sequence[str], env: dict[str, str], mounts: Sequence[str] = ()) -> str:
    done = subprocess.run(_run_argv(container, argv, env, mounts), capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(argv)} exited {done.returncode}:\n{done.stdout}\n{done.stderr}"
    return done.stdout + done.stderr


def _services() -> dict[str, Any]:
    raw = yaml.safe_load(COMPOSE.read_text())
    env = {"POSTGRES_PASSWORD": "unused", "STUDY_FILE": "tiny.yaml", "STUDY_NAME": "tiny"}
    services: dict[str, Any] = substitute_tree(raw, env)["services"]
    return services


def _entrypoint(image: str) -> list[str]:
    """The image's ENTRYPOINT, which docker and Kubernetes put before a service's command (buildah run does not)."""
    shown = subprocess.run(
        ["podman", "image", "inspect", "--format", "{{json .Config.Entrypoint}}", image],
        capture_output=True,
        text=True,
        check=True,
    )
    entrypoint: list[str] = json.loads(shown.stdout)
    return entrypoint


def _compose_command(image: str, service: str, study_file: str, study_name: str) -> list[str]:
    """The compose service's command line for this study in ``image``, entrypoint first, without ``--gpus``
    (this machine has no GPU)."""
    argv = _entrypoint(image) + command_argv(_services()[service]["command"])
    argv = [study_file if part == "studies/tiny.yaml" else study_name if part == "tiny" else part for part in argv]
    if "--gpus" in argv:
        at = argv.index("--gpus")
        del argv[at : at + 2]
    return argv


def _compose_env(storage: str) -> dict[str, str]:
    """The compose services' environment, with the test database as the storage."""
    env = dict(_services()["worker"]["environment"])
    env["EDGESEARCH_STORAGE"] = storage
    return env


def _study_folder(tmp_path: Path, name: str, **extra: Any) -> Path:
    """A folder holding ``<name>.yaml``, readable by the image's user, to mount at /app/studies."""
    folder = tmp_path / "studies"
    folder.mkdir()
    (folder / f"{name}.yaml").write_text(yaml.safe_dump(tiny_study(name, **extra)))
    for path in (folder, *folder.iterdir()):
        path.chmod(0o755 if path.is_dir() else 0o644)
    return folder


def _trials(url: str, name: str) -> list[FrozenTrial]:
    return sorted(optuna.load_study(study_name=name, storage=url).get_trials(), key=lambda t: t.number)


def _processes_of(uid: int, needle: str) -> list[int]:
    """Host pids of ``uid``'s processes whose command line contains ``needle`` (chroot shares the pid space)."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            owner = entry.stat().st_uid
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        except OSError:
            continue
        if owner == uid and needle in cmdline:
            found.append(int(entry.name))
    return found


def _parent(pid: int) -> int:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid:")))


def _container_process(uid: int, needle: str) -> int:
    """The process a container's entrypoint became (a docker container's pid 1): the matching process whose
    parent is buildah's exec shim (``buildah-chroot-exec``), not the shim itself."""
    found = _processes_of(uid, needle)
    shims = {pid for pid in found if Path(f"/proc/{pid}/cmdline").read_bytes().startswith(b"buildah-chroot-exec")}
    (main,) = [pid for pid in found if _parent(pid) in shims]
    return main


def _kill_leftovers(uid: int, needle: str) -> None:
    """Kill what a failed test left running: a killed ``buildah run`` does not take its container's processes."""
    for pid in _processes_of(uid, needle):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_image_runs_the_cli_as_its_non_root_user(container: str) -> None:
    from edgesearch import __version__

    output = _run(container, ["sh", "-c", "id -u; pwd; edgesearch --version"], env={})
    uid, workdir, *version_words = output.split()
    assert int(uid) == APP_UID
    assert workdir == "/app"
    assert " ".join(version_words) == f"edgesearch {__version__}"


def test_create_and_a_worker_in_the_image_finish_a_study_on_postgres_with_exactly_n_trials(
    image: str, container: str, postgres_url: str, tmp_path: Path
) -> None:
    studies = _study_folder(tmp_path, "boxed", n_trials=2)
    env = _compose_env(postgres_url)
    mounts = [f"{studies}:/app/studies:ro"]
    _run(container, _compose_command(image, "create", "studies/boxed.yaml", "boxed"), env, mounts)
    output = _run(container, _compose_command(image, "worker", "studies/boxed.yaml", "boxed"), env, mounts)
    trials = _trials(postgres_url, "boxed")
    assert [t.state for t in trials] == [TrialState.COMPLETE, TrialState.COMPLETE], output
    assert all(t.user_attrs["run_dir"].startswith("/data/runs/") for t in trials)
    # A second worker finds the study full: it exits 0 without a trial.
    _run(container, _compose_command(image, "worker", "studies/boxed.yaml", "boxed"), env, mounts)
    assert len(_trials(postgres_url, "boxed")) == 2


def test_a_worker_in_the_image_hands_its_trial_back_on_sigterm(
    image: str, container: str, postgres_url: str, tmp_path: Path
) -> None:
    # Epochs of a few seconds (as tests/searcher/test_failures.py's): long enough to stop one midway.
    slow = merge(TINY_TRAINER, {"data": {"image_size": 64, "synthetic": {"n_images": 48}}, "epochs": 4})
    fast_heartbeat = {"heartbeat_interval": 1, "grace_period": 4, "max_retries": 2}
    studies = _study_folder(tmp_path, "stopped", n_trials=1, trainer=slow, fault_tolerance=fast_heartbeat)
    env = _compose_env(postgres_url)
    mounts = [f"{studies}:/app/studies:ro"]
    _run(container, _compose_command(image, "create", "studies/stopped.yaml", "stopped"), env, mounts)
    argv = _compose_command(image, "worker", "studies/stopped.yaml", "stopped")
    proc = subprocess.Popen(
        _run_argv(container, argv, env, mounts), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True
    )
    try:
        wait_for(
            lambda: any(t.intermediate_values for t in _trials(postgres_url, "stopped")),
            timeout=400,
            what="epoch 1 of the trial in the container",
        )
        # As `docker stop` and Kubernetes do: SIGTERM to the container's edgesearch process.
        pid = _container_process(APP_UID, "edgesearch worker stopped")
        sent = time.monotonic()
        os.kill(pid, signal.SIGTERM)
        output, _ = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
        _kill_leftovers(APP_UID, "edgesearch worker stopped")
    assert proc.returncode == 0, output
    assert time.monotonic() - sent < 60, "the worker must stop within a batch, not finish the trial"
    assert "handed back for retry" in output
    first, retry = _trials(postgres_url, "stopped")
    assert first.state == TrialState.FAIL and "interrupted" in first.user_attrs["fail_reason"]
    assert retry.state == TrialState.WAITING
