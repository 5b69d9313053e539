"""Local worker processes: one child ``edgesearch worker`` per slot, and the signal hand-back.

``edgesearch worker --processes N`` / ``--gpus 0,1`` and ``study run --processes N`` start
their workers here. Each child is a whole worker (its own storage connections, heartbeat and
hand-back) with ``CUDA_VISIBLE_DEVICES`` set to its GPU; the parent only passes a stop on and
collects exit codes, so a child that dies takes nothing with it but its own trial, which the
heartbeat retries. What the parent shows of the children is the CLI's business
(``on_line``).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path

from edgesearch.errors import UserError, child_exit_code
from edgesearch.trainer.device import REQUIRE_CUDA_ENV

__all__ = ["LocalWorkers", "check_gpus", "stop_on_signals", "terminate_as_interrupt", "worker_args"]


@contextmanager
def stop_on_signals(on_signal: Callable[[str], None] | None = None) -> Iterator[threading.Event]:
    """SIGTERM or SIGINT (Ctrl-C) set the yielded event: the worker hands its trial back and exits 0.

    ``on_signal`` is called with the signal's name on the first one. A second signal stops at
    once (KeyboardInterrupt), for someone who cannot wait. The previous handlers come back
    afterwards. Outside the main thread (where Python allows no handlers), the event is simply
    never set by a signal.
    """
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield stop
        return

    def handle(signum: int, frame: object) -> None:
        if stop.is_set():
            raise KeyboardInterrupt
        stop.set()
        if on_signal is not None:
            on_signal(signal.Signals(signum).name)

    previous = {sig: signal.signal(sig, handle) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


@contextmanager
def terminate_as_interrupt() -> Iterator[None]:
    """SIGTERM raises KeyboardInterrupt, as Ctrl-C does, so ``finally`` blocks clean up on either.

    Python's default SIGTERM ends the process at once: a command killed so leaves its temporary
    files behind. Outside the main thread this does nothing.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return

    def handle(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    previous = signal.signal(signal.SIGTERM, handle)
    try:
        yield
    finally:
        signal.signal(signal.SIGTERM, previous)


def worker_args(
    *, runs_dir: Path, artifacts: Path | None, n_trials: int | None = None, timeout: float | None = None
) -> list[str]:
    """The ``edgesearch worker`` options a parent passes on to its children."""
    args = ["--runs-dir", str(runs_dir)]
    if artifacts is not None:
        args += ["--artifacts", str(artifacts)]
    if n_trials is not None:
        args += ["--n-trials", str(n_trials)]
    if timeout is not None:
        args += ["--timeout", str(timeout)]
    return args


def gpu_slots(ids: Sequence[str], per_gpu: int) -> list[str | None]:
    """One slot per worker process: each GPU id ``per_gpu`` times, GPU by GPU (``0,0,1,1``)."""
    return [gpu for gpu in ids for _ in range(per_gpu)]


def slot_label(index: int, gpu: str | None) -> str:
    """How the progress view names a child: ``w3`` or, with a GPU, ``w3 gpu1``."""
    return f"w{index}" if gpu is None else f"w{index} gpu{gpu}"


def check_gpus(ids: Sequence[str]) -> None:
    """UserError unless CUDA is available and each numeric id names a GPU torch can see."""
    import torch

    shown = ",".join(ids)
    if not torch.cuda.is_available():
        raise UserError(f"--gpus {shown}: CUDA is not available here (torch sees no GPU); run without --gpus")
    count = torch.cuda.device_count()
    missing = [gpu for gpu in ids if gpu.isdigit() and int(gpu) >= count]
    if missing:
        raise UserError(f"--gpus {shown}: no GPU {', '.join(missing)} here; this machine has GPUs 0..{count - 1}")


class LocalWorkers:
    """Child worker processes of one study, one per slot (a GPU id, or None for no GPU)."""

    def __init__(
        self,
        name: str,
        url: str,
        *,
        slots: Sequence[str | None],
        args: Sequence[str],
        on_line: Callable[[int, str], None],
    ) -> None:
        self.name, self.url = name, url
        self.slots, self.args = list(slots), list(args)
        self.on_line = on_line
        self.children: list[subprocess.Popen[str]] = []
        self._threads: list[threading.Thread] = []
        self._stopping = False

    def start(self) -> None:
        """Start every child; each line a child prints goes to ``on_line(index, line)``."""
        for index, gpu in enumerate(self.slots):
            env = dict(os.environ, EDGESEARCH_STORAGE=self.url, PYTHONUNBUFFERED="1")
            if gpu is not None:
                env["CUDA_VISIBLE_DEVICES"] = gpu
                env[REQUIRE_CUDA_ENV] = gpu  # never fall back to the CPU when this GPU is not there
            cmd = [sys.executable, "-m", "edgesearch", "worker", self.name, *self.args]
            # A session of its own: a terminal's Ctrl-C reaches only this parent, which passes on
            # one SIGTERM; a child that got both would take the second as "stop now".
            child = subprocess.Popen(
                cmd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True
            )
            self.children.append(child)
            thread = threading.Thread(target=self._relay, args=(child, index), daemon=True)
            thread.start()
            self._threads.append(thread)

    def _relay(self, child: subprocess.Popen[str], index: int) -> None:
        if child.stdout is None:  # only when started without stdout=PIPE: nothing to relay
            return
        for line in child.stdout:
            self.on_line(index, line.rstrip())

    def running(self) -> bool:
        return any(child.poll() is None for child in self.children)

    def stop(self) -> None:
        """Ask every running child to hand its trial back and exit (SIGTERM), once."""
        if self._stopping:
            return
        self._stopping = True
        for child in self.children:
            if child.poll() is None:
                child.send_signal(signal.SIGTERM)

    def kill(self) -> None:
        """End every child now (their trials are retried once their heartbeats go stale)."""
        for child in self.children:
            child.kill()
        for child in self.children:
            child.wait()

    def finish(self) -> int:
        """Wait for the output relays; the highest child exit code (EXIT_KILLED for a signal)."""
        for thread in self._threads:
            thread.join(timeout=5)
        codes = [child.wait() for child in self.children]
        return max((child_exit_code(code) for code in codes), default=0)
