"""A WSGI guard that answers only requests addressed to this server by a name it was told to serve.

Binding the dashboard to loopback keeps other machines out, but not a web page the user visits:
with DNS rebinding, ``evil.example`` first resolves to the attacker and then to 127.0.0.1, and the
user's browser sends the page's requests to the dashboard with ``Host: evil.example``. The
dashboard has no authentication and can change studies, so a request whose ``Host`` is not the
bound address, a loopback name, or a name given with ``--allow-host`` gets 403 and nothing else.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from wsgiref.types import StartResponse, WSGIApplication, WSGIEnvironment

__all__ = ["LOOPBACK_NAMES", "HostCheck", "host_name", "is_loopback"]

LOOPBACK_NAMES = frozenset({"localhost", "127.0.0.1", "::1"})
"""Names a request from this machine may use, whatever the dashboard is bound to."""


def is_loopback(address: str) -> bool:
    """Whether ``address`` is reachable from this machine only (127.0.0.0/8, ::1, localhost): what the
    dashboard and the pooler may bind to without a word about other machines."""
    if address == "localhost":
        return True
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return False


def host_name(header: str) -> str:
    """The name in a ``Host`` header, without its port or IPv6 brackets, lower-case."""
    header = header.strip().lower()
    if header.startswith("["):  # [::1]:8080
        return header[1:].split("]", 1)[0]
    if header.count(":") == 1:  # name:port (an IPv6 address without brackets has several colons)
        return header.split(":", 1)[0]
    return header


def _canonical(name: str) -> str:
    try:
        return str(ipaddress.ip_address(name))
    except ValueError:
        return name.lower().rstrip(".")


class HostCheck:
    """Wraps a WSGI app; requests for any other ``Host`` than ``allowed`` (and loopback names) get 403."""

    def __init__(self, app: WSGIApplication, *, bound: str, allowed: Iterable[str] = ()) -> None:
        self.app = app
        self.allowed = {_canonical(name) for name in (*LOOPBACK_NAMES, bound, *allowed) if name}

    def __call__(self, environ: WSGIEnvironment, start_response: StartResponse) -> Iterable[bytes]:
        name = _canonical(host_name(str(environ.get("HTTP_HOST") or environ.get("SERVER_NAME") or "")))
        if name in self.allowed:
            result: Iterable[bytes] = self.app(environ, start_response)
            return result
        body = (
            f"403: this dashboard does not answer for host {name!r}; "
            "start it with --allow-host NAME to reach it by that name\n"
        ).encode()
        headers = [
            ("Content-Type", "text/plain; charset=utf-8"),
            ("Content-Length", str(len(body))),
        ]
        start_response("403 Forbidden", headers)
        return [body]
