"""Members of the canonical releases' tar archives: found by name, extracted by name only."""

from __future__ import annotations

import shutil
import tarfile
from pathlib import Path

from plus.io import InputError


def tar_members(archive, suffixes: dict[str, str]) -> dict[str, tarfile.TarInfo]:
    """Map key -> the one archive member whose path ends with '/' + suffix (or equals suffix)."""
    try:
        with tarfile.open(archive) as tf:
            members = [m for m in tf.getmembers() if m.isfile()]
    except (tarfile.TarError, OSError, EOFError) as exc:
        raise InputError(f"{archive}: not a readable tar archive ({exc})") from exc
    out = {}
    for key, suffix in suffixes.items():
        hits = [m for m in members if m.name == suffix or m.name.endswith("/" + suffix)]
        if len(hits) != 1:
            raise InputError(f"{archive}: expected one member named {suffix!r}, found {len(hits)}")
        out[key] = hits[0]
    return out


def extract(archive, members: dict[str, tarfile.TarInfo], tmp: Path) -> dict[str, Path]:
    """Extract the given members (by name only, never their stored paths) into `tmp`."""
    out = {}
    with tarfile.open(archive) as tf:
        for key, member in members.items():
            path = tmp / Path(member.name).name
            with tf.extractfile(member) as src, open(path, "wb") as dst:
                shutil.copyfileobj(src, dst)
            out[key] = path
    return out
