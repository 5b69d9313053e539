"""``edgesearch dashboard`` in a real headless Chromium: the study page and a trial's artifact image."""

from __future__ import annotations

import socket
import subprocess
import sys
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from typer.testing import CliRunner

from devtools.ports import free_port
from edgesearch.cli import app
from edgesearch.searcher.storage.opening import open_storage
from edgesearch.services.dashboard import is_loopback
from tests.browser import broken_images, open_browser, screenshot, wait_for

runner = CliRunner()


@pytest.fixture
def dashboard(finished_study: dict[str, Any]) -> Iterator[str]:
    """A real ``edgesearch dashboard`` process on a free loopback port; yields its base URL."""
    port = free_port()
    cmd = [sys.executable, "-m", "edgesearch", "dashboard", "--storage", finished_study["url"]]
    cmd += ["--artifacts", str(finished_study["artifacts"]), "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    base = f"http://127.0.0.1:{port}"

    def up() -> bool:
        if proc.poll() is not None:
            raise AssertionError(f"dashboard exited: {proc.communicate()}")
        try:
            with urllib.request.urlopen(f"{base}/api/studies", timeout=2) as response:
                return bool(response.status == 200)
        except OSError:
            return False

    try:
        wait_for(up, timeout=60, what="the dashboard to answer")
        yield base
    finally:
        proc.terminate()
        proc.wait(timeout=20)


@pytest.mark.slow
def test_the_dashboard_shows_the_study_and_a_trial_page_shows_its_artifact_image(
    dashboard: str, tmp_path: Path
) -> None:
    from selenium.webdriver.common.by import By

    with open_browser() as browser:
        browser.get(f"{dashboard}/dashboard")
        wait_for(lambda: "dash-study" in browser.find_element(By.TAG_NAME, "body").text, what="the study name")
        screenshot(browser, tmp_path / "screenshots" / "dashboard-home.png")

        browser.get(f"{dashboard}/dashboard/studies/1/trials?numbers=0")

        def artifact_images() -> list[Any]:
            images = browser.find_elements(By.CSS_SELECTOR, "img[src*='/artifacts/']")
            return [img for img in images if browser.execute_script("return arguments[0].naturalWidth", img) > 0]

        loaded = wait_for(artifact_images, timeout=45, what="an artifact image on the trial page")
        body = browser.find_element(By.TAG_NAME, "body").text
        assert "edges.png" in body and "curves.png" in body
        assert not [src for src in broken_images(browser) if "/artifacts/" in src]
        shot = screenshot(browser, tmp_path / "screenshots" / "dashboard-trial.png")
        assert loaded and shot.stat().st_size > 10_000


def test_is_loopback_accepts_only_local_addresses() -> None:
    assert is_loopback("127.0.0.1") and is_loopback("localhost") and is_loopback("::1") and is_loopback("127.0.0.2")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4") and not is_loopback("example.org")


@pytest.mark.slow
def test_binding_beyond_loopback_warns_that_there_is_no_authentication(tmp_path: Path) -> None:
    open_storage(f"sqlite:///{tmp_path}/x.db")  # an empty storage: the dashboard reads only existing ones
    port = free_port()
    cmd = [sys.executable, "-m", "edgesearch", "dashboard", "--storage", f"sqlite:///{tmp_path}/x.db"]
    cmd += ["--artifacts", str(tmp_path / "a"), "--host", "0.0.0.0", "--port", str(port)]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stderr is not None
        line = wait_for(proc.stderr.readline, timeout=60, what="the warning")
        assert "no authentication" in line
    finally:
        proc.terminate()
        proc.wait(timeout=20)


def test_a_port_in_use_is_a_clear_error(tmp_path: Path) -> None:
    open_storage(f"sqlite:///{tmp_path}/x.db")
    with socket.socket() as busy:
        busy.bind(("127.0.0.1", 0))
        busy.listen()
        port = busy.getsockname()[1]
        args = ["dashboard", "--storage", f"sqlite:///{tmp_path}/x.db", "--artifacts", str(tmp_path / "a")]
        result = runner.invoke(app, [*args, "--port", str(port)])
    assert result.exit_code == 2
    assert f"127.0.0.1:{port}" in result.stderr and "--port" in result.stderr


def _status(host: str, port: int, path: str, *, host_header: str) -> int:
    """GET ``path`` from ``host:port`` sending ``Host: host_header``, as a rebinding page's browser would."""
    import http.client

    connection = http.client.HTTPConnection(host, port, timeout=10)
    try:
        connection.putrequest("GET", path, skip_host=True)
        connection.putheader("Host", host_header)
        connection.endheaders()
        return connection.getresponse().status
    finally:
        connection.close()


@pytest.mark.slow
def test_a_request_for_a_foreign_host_name_gets_403(dashboard: str) -> None:
    port = int(dashboard.rsplit(":", 1)[1])
    assert _status("127.0.0.1", port, "/api/studies", host_header=f"127.0.0.1:{port}") == 200
    assert _status("127.0.0.1", port, "/api/studies", host_header=f"localhost:{port}") == 200
    assert _status("127.0.0.1", port, "/api/studies", host_header=f"evil.example:{port}") == 403
    assert _status("127.0.0.1", port, "/dashboard", host_header="evil.example") == 403


@pytest.mark.slow
def test_the_dashboard_listens_on_ipv6_loopback_and_allows_named_hosts(tmp_path: Path) -> None:
    open_storage(f"sqlite:///{tmp_path}/x.db")
    with socket.socket(socket.AF_INET6) as sock:
        sock.bind(("::1", 0))
        port = sock.getsockname()[1]
    cmd = [sys.executable, "-m", "edgesearch", "dashboard", "--storage", f"sqlite:///{tmp_path}/x.db"]
    cmd += ["--artifacts", str(tmp_path / "a"), "--host", "::1", "--port", str(port), "--allow-host", "lab.example"]
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        assert proc.stdout is not None
        line = wait_for(proc.stdout.readline, timeout=60, what="the dashboard's address")
        while "open http" not in line:
            line = wait_for(proc.stdout.readline, timeout=60, what="the dashboard's address")
        assert f"http://[::1]:{port}/dashboard" in line
        assert _status("::1", port, "/api/studies", host_header=f"[::1]:{port}") == 200
        assert _status("::1", port, "/api/studies", host_header=f"lab.example:{port}") == 200
        assert _status("::1", port, "/api/studies", host_header="evil.example") == 403
    finally:
        proc.terminate()
        proc.wait(timeout=20)
