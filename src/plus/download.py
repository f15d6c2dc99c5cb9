"""`plus download`: fetch one pinned artefact with retries and resume, verify it, then move it into place.

The transfer goes to `<out>.part` (resumed with an HTTP Range request after a failure); the file is only
renamed to `<out>` after its sha256 matches the config (and, with --gzip, after the whole gzip stream
decompresses). When the config has no checksum yet (the release publishes none), the digest is printed
and written to `<out>.sha256` so it can be committed to the config: from then on it is enforced.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import shutil
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path

from plus.io import InputError


def sha256sum(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


def check_gzip(path) -> None:
    try:
        with gzip.open(path, "rb") as fh:
            while fh.read(1 << 22):
                pass
    except (OSError, EOFError, zlib.error) as exc:
        raise InputError(f"{path}: truncated or corrupt gzip file ({exc})") from exc


def _fetch(url: str, part: Path, timeout: float) -> None:
    """Append the missing bytes of `url` to `part` (Range request when part already has some)."""
    have = part.stat().st_size if part.exists() else 0
    request = urllib.request.Request(url, headers={"Range": f"bytes={have}-"} if have else {})
    with urllib.request.urlopen(request, timeout=timeout) as resp:
        status = getattr(resp, "status", None)
        mode = "ab" if have and status == 206 else "wb"
        with open(part, mode) as out:
            shutil.copyfileobj(resp, out, 1 << 20)


def download(url: str, out, sha256: str = "", is_gzip: bool = False, retries: int = 5,
             timeout: float = 60.0, wait: float = 5.0) -> str:
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    part = out.with_name(out.name + ".part")
    for attempt in range(1, retries + 1):
        try:
            _fetch(url, part, timeout)
            break
        except (urllib.error.URLError, OSError, TimeoutError) as exc:
            if attempt == retries:
                raise InputError(f"{url}: download failed after {retries} attempts ({exc})") from exc
            print(f"attempt {attempt} failed ({exc}); retrying in {wait:.0f} s", file=sys.stderr)
            time.sleep(wait)
    digest = sha256sum(part)
    if sha256 and digest != sha256:
        part.unlink()
        raise InputError(f"{url}: sha256 {digest} does not match the config's {sha256}; file rejected")
    if is_gzip:
        try:
            check_gzip(part)
        except InputError:
            part.unlink()
            raise
    if not sha256:
        Path(f"{out}.sha256").write_text(f"{digest}  {out.name}\n")
        print(f"no checksum in the config: recorded sha256 {digest} in {out}.sha256; "
              f"copy it into the config to pin this release", file=sys.stderr)
    os.replace(part, out)
    print(f"{out}: {out.stat().st_size} bytes, sha256 {digest}", file=sys.stderr)
    return digest
