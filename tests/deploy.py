"""What the deployment tests (Docker, Kubernetes, secrets) share: plain data and functions, no fixtures.

- :func:`command_argv` turns a compose ``command:`` into arguments, :func:`substitute` and
  :func:`substitute_tree` replace compose's variables (:data:`COMPOSE_VARIABLE`) as ``docker compose`` does;
- :func:`parse_command_line` parses a container's command line with the edgesearch CLI's own parser,
  without running it (:data:`USAGE_ERRORS` is what it raises for a bad one);
- the repository's Docker files (:data:`COMPOSE`, :data:`DOCKERFILE`), :func:`dockerfile_instructions`
  to read the Dockerfile, and :data:`URL_PASSWORD` to find a password written in a URL;
- :func:`dashboard` starts a real ``edgesearch dashboard`` process, on a port :func:`devtools.ports.free_port` finds.
"""

from __future__ import annotations

import importlib
import os
import re
import shlex
import subprocess
import sys
import threading
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import typer.main

from edgesearch.cli import app

REPO = Path(__file__).resolve().parents[1]
DOCKER = REPO / "docker"
COMPOSE = DOCKER / "compose.yaml"
DOCKERFILE = DOCKER / "Dockerfile"

URL_PASSWORD = re.compile(r"://[^/:@\s]*:(?P<password>[^@\s]+)@")
"""The password of a ``scheme://user:password@host`` URL, as the group ``password``."""

_OPEN_LINE = re.compile(r"open http://(\[[^\]]+\]|[^\s:/]+):(\d+)/dashboard")


# -- command lines ---------------------------------------------------------------------------------


def command_argv(command: str | list[str]) -> list[str]:
    """A compose ``command:`` as an argument list (the string form is split like a shell would)."""
    return shlex.split(command) if isinstance(command, str) else [str(part) for part in command]


# -- compose variables ------------------------------------------------------------------------------

# $$ (a literal $), ${NAME}, ${NAME:-default}, ${NAME-default}, ${NAME:?error}, ${NAME?error}, $NAME.
COMPOSE_VARIABLE = re.compile(
    r"\$(?:(?P<escaped>\$)"
    r"|\{(?P<braced>[A-Za-z_][A-Za-z0-9_]*)(?:(?P<op>:?[-?])(?P<arg>[^}]*))?\}"
    r"|(?P<bare>[A-Za-z_][A-Za-z0-9_]*))"
)


def substitute(text: str, env: Mapping[str, str]) -> str:
    """``text`` with compose's variable syntax replaced from ``env``, as ``docker compose`` does."""

    def replace(match: re.Match[str]) -> str:
        if match["escaped"]:
            return "$"
        name = match["braced"] or match["bare"]
        op, arg = match["op"], match["arg"] or ""
        value = env.get(name)
        is_set = value is not None
        is_filled = bool(value)
        if op in (":-", "-"):
            use_value = is_filled if op == ":-" else is_set
            return value if use_value and value is not None else arg
        if op in (":?", "?") and not (is_filled if op == ":?" else is_set):
            raise ValueError(f"required variable {name} is missing: {arg}")
        return value or ""

    return COMPOSE_VARIABLE.sub(replace, text)


def substitute_tree(node: Any, env: Mapping[str, str]) -> Any:
    """``node`` (parsed YAML) with :func:`substitute` applied to every string in it."""
    if isinstance(node, str):
        return substitute(node, env)
    if isinstance(node, list):
        return [substitute_tree(item, env) for item in node]
    if isinstance(node, dict):
        return {substitute_tree(key, env): substitute_tree(value, env) for key, value in node.items()}
    return node


def _usage_errors() -> tuple[type[Exception], ...]:
    """The parser's "bad command line" exception: Click's UsageError, vendored by Typer >= 0.26."""
    found: list[type[Exception]] = []
    for module in ("typer._click.exceptions", "click.exceptions"):
        try:
            found.append(importlib.import_module(module).UsageError)
        except ImportError:
            continue
    return tuple(found)


USAGE_ERRORS = _usage_errors()


def parse_command_line(argv: Sequence[str]) -> Any:
    """Parse ``edgesearch ARGV...`` with the CLI's own parser and return the leaf command's context.

    Nothing is run: subcommands are resolved with ``get_command`` and each level only builds its
    context (``make_context``), which raises the parser's UsageError for an unknown command or
    option, a missing argument or a bad value.
    """
    # Click's classes; newer Typer vendors Click, so they are not ``click.Group``/``click.Command``.
    command: Any = typer.main.get_command(app)
    parent: Any = None
    name = "edgesearch"
    args = list(argv)
    while hasattr(command, "get_command"):  # a group: its own options, then a subcommand name
        ctx = command.make_context(name, args, parent=parent, resilient_parsing=False)
        rest = list(ctx.args)
        consumed = len(args) - len(rest)
        if consumed == 0 or args[consumed - 1].startswith("-"):
            ctx.fail(f"missing command after {name!r}")
        # Group parsing stops at the first positional argument: the subcommand's name.
        name = args[consumed - 1]
        subcommand = command.get_command(ctx, name)
        if subcommand is None:
            ctx.fail(f"no such command {name!r}")
        command, parent, args = subcommand, ctx, rest
    return command.make_context(name, args, parent=parent, resilient_parsing=False)


# -- the Dockerfile --------------------------------------------------------------------------------


def dockerfile_instructions(path: Path) -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) pairs, continuation lines joined, comments dropped."""
    instructions: list[tuple[str, str]] = []
    pending = ""
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not pending and (not line or line.startswith("#")):
            continue
        if pending and line.startswith("#"):
            continue
        if line.endswith("\\"):
            pending += line[:-1] + " "
            continue
        full = (pending + line).strip()
        pending = ""
        keyword, _, arguments = full.partition(" ")
        instructions.append((keyword.upper(), arguments.strip()))
    return instructions


# -- a real dashboard ------------------------------------------------------------------------------


@contextmanager
def dashboard(args: Sequence[str], *, cwd: Path, output: list[str]) -> Iterator[tuple[str, int]]:
    """Start ``edgesearch dashboard ARGS``; yields the (host, port) of its "open http://..." line.

    Every line it prints is appended to ``output``; the process is terminated on exit.
    """
    proc = subprocess.Popen(
        [sys.executable, "-m", "edgesearch", "dashboard", *args],
        cwd=cwd,
        env=dict(os.environ, PYTHONUNBUFFERED="1"),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    ready = threading.Event()
    found: list[tuple[str, int]] = []

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            output.append(line)
            match = _OPEN_LINE.search(line)
            if match and not found:
                found.append((match.group(1).strip("[]"), int(match.group(2))))
                ready.set()
        ready.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        ready.wait(timeout=120)
        assert found, "".join(output)
        yield found[0]
    finally:
        proc.terminate()
        proc.wait(timeout=30)
        reader.join(timeout=10)
