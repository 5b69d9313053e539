"""The dashboard's Host guard (services/host_check.py) against hand-built WSGI requests."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import pytest

from edgesearch.services.host_check import HostCheck, host_name


def _app(environ: dict[str, Any], start_response: Any) -> Iterable[bytes]:
    start_response("200 OK", [("Content-Type", "text/plain")])
    return [b"<the dashboard page>"]


def _request(guard: HostCheck, host: str) -> tuple[str, bytes]:
    seen: list[str] = []
    body = b"".join(guard({"HTTP_HOST": host, "SERVER_NAME": "ignored"}, lambda status, headers: seen.append(status)))
    return seen[0], body


@pytest.mark.parametrize(
    ("header", "name"),
    [
        ("127.0.0.1:8080", "127.0.0.1"),
        ("[::1]:8080", "::1"),
        ("LocalHost", "localhost"),
        ("::1", "::1"),
        ("a.b", "a.b"),
    ],
)
def test_host_name_drops_the_port_and_brackets(header: str, name: str) -> None:
    assert host_name(header) == name


@pytest.mark.parametrize("host", ["127.0.0.1:8080", "localhost:8080", "[::1]:8080", "127.0.0.1"])
def test_loopback_names_are_answered(host: str) -> None:
    assert _request(HostCheck(_app, bound="127.0.0.1"), host) == ("200 OK", b"<the dashboard page>")


@pytest.mark.parametrize("host", ["evil.example:8080", "evil.example", "127.0.0.1.evil.example", "10.0.0.8:8080", ""])
def test_a_rebound_name_gets_403_and_never_reaches_the_dashboard(host: str) -> None:
    status, body = _request(HostCheck(_app, bound="127.0.0.1"), host)
    assert status == "403 Forbidden" and b"<the dashboard page>" not in body and b"--allow-host" in body


def test_allowed_names_and_the_bound_address_are_answered() -> None:
    guard = HostCheck(_app, bound="10.0.0.8", allowed=["Lab-Box.example"])
    assert _request(guard, "10.0.0.8:8080")[0] == "200 OK"
    assert _request(guard, "lab-box.example:8080")[0] == "200 OK"
    assert _request(guard, "other.example")[0] == "403 Forbidden"
