"""File helpers shared by every stage: atomic writes, gzip-aware reading, FASTA/3line parsing.

Every reader raises :class:`InputError` with a one-line message naming the file and the record
number, so bad input never produces a traceback-only failure or a half-written output.
"""

from __future__ import annotations

import contextlib
import gzip
import io
import json
import math
import os
import tempfile
import zlib
from collections.abc import Iterator
from pathlib import Path


class InputError(ValueError):
    """Bad input data: the message names the file and the record."""


def is_finite_number(text: str) -> bool:
    """Whether `text` reads as a finite float (labels of regression tasks)."""
    try:
        return math.isfinite(float(text))
    except ValueError:
        return False


def open_text(path: str | os.PathLike) -> io.TextIOBase:
    """Open a plain or gzip-compressed text file (decided by the magic bytes, not the name)."""
    path = Path(path)
    if not path.exists():
        raise InputError(f"{path}: file not found")
    with open(path, "rb") as fh:
        magic = fh.read(2)
    if magic == b"\x1f\x8b":
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="ascii", errors="replace")
    return open(path, encoding="ascii", errors="replace")


def iter_lines(path: str | os.PathLike) -> Iterator[tuple[int, str]]:
    """Yield (1-based line number, line without newline); a truncated gzip becomes an InputError."""
    try:
        with open_text(path) as fh:
            for n, line in enumerate(fh, 1):
                yield n, line.rstrip("\r\n")
    except (EOFError, gzip.BadGzipFile, zlib.error, OSError) as exc:
        if isinstance(exc, FileNotFoundError):
            raise InputError(f"{path}: file not found") from exc
        raise InputError(f"{path}: corrupt or truncated compressed file ({exc})") from exc


def read_fasta(path: str | os.PathLike) -> Iterator[tuple[int, str, str]]:
    """Yield (record number, header without '>', sequence) for each FASTA record."""
    header, chunks, number = None, [], 0
    for line_no, line in iter_lines(path):
        if line.startswith(">"):
            if header is not None:
                yield number, header, "".join(chunks)
            number += 1
            header, chunks = line[1:].strip(), []
            if not header:
                raise InputError(f"{path}: record {number} (line {line_no}): empty FASTA header")
        elif line.strip():
            if header is None:
                raise InputError(f"{path}: line {line_no}: sequence data before the first '>' header")
            chunks.append(line.strip())
    if header is not None:
        yield number, header, "".join(chunks)


def read_3line(path: str | os.PathLike) -> Iterator[tuple[int, str, str, str]]:
    """Yield (record number, header, sequence, labels) from a 3line file (>header / sequence / labels)."""
    lines = [(n, s) for n, s in iter_lines(path) if s.strip()]
    if len(lines) % 3:
        raise InputError(f"{path}: {len(lines)} non-empty lines is not a multiple of 3 (3line format)")
    for k in range(0, len(lines), 3):
        (n0, head), (_, seq), (_, lab) = lines[k : k + 3]
        record = k // 3 + 1
        if not head.startswith(">"):
            raise InputError(f"{path}: record {record} (line {n0}): expected a '>' header, got {head[:30]!r}")
        if len(seq.strip()) != len(lab.strip()):
            raise InputError(
                f"{path}: record {record} ({head[1:].split()[0] if head[1:].split() else '?'}): "
                f"sequence length {len(seq.strip())} != label length {len(lab.strip())}"
            )
        yield record, head[1:].strip(), seq.strip(), lab.strip()


def umask() -> int:
    """The process's umask, read without changing it (Linux /proc; elsewhere set and restored)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def as_created(path: str | os.PathLike) -> None:
    """Give a file or directory made by tempfile (mode 0600/0700) the mode open()/mkdir() would have given it
    under the umask, so results on a shared disk stay readable by the group like every other output."""
    os.chmod(path, (0o777 if os.path.isdir(path) else 0o666) & ~umask())


def _temp_beside(path: Path, suffix: str) -> Path:
    """An empty hidden file in `path`'s directory (created if missing), with the mode open() would give."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    as_created(tmp)
    return Path(tmp)


@contextlib.contextmanager
def atomic_write(path: str | os.PathLike, mode: str = "w", **kwargs):
    """Write to a temporary file beside `path` and rename it into place only on success."""
    path = Path(path)
    tmp = _temp_beside(path, ".tmp")
    try:
        if mode.startswith("wb") and path.suffix == ".gz":
            fh = gzip.GzipFile(tmp, "wb", mtime=0)
        elif path.suffix == ".gz":
            fh = io.TextIOWrapper(gzip.GzipFile(tmp, "wb", mtime=0), encoding="ascii", newline="\n")
        else:
            fh = open(tmp, mode, **kwargs)
        with fh:
            yield fh
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise


def atomic_path(path: str | os.PathLike):
    """Context manager yielding a temporary path to hand to writers that take a path (np.save, torch.save)."""
    return _AtomicPath(Path(path))


class _AtomicPath:
    def __init__(self, path: Path):
        self.path = path

    def __enter__(self) -> Path:
        self.tmp = _temp_beside(self.path, ".tmp" + self.path.suffix)
        return self.tmp

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            os.replace(self.tmp, self.path)
        else:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.tmp)
        return False


def write_json(path: str | os.PathLike, obj) -> None:
    """Atomically write `obj` as indented JSON."""
    with atomic_write(path) as fh:
        json.dump(obj, fh, indent=2, sort_keys=False, default=_json_default)
        fh.write("\n")


def read_json(path: str | os.PathLike):
    try:
        with open(path) as fh:
            return json.load(fh)
    except FileNotFoundError as exc:
        raise InputError(f"{path}: file not found") from exc
    except json.JSONDecodeError as exc:
        raise InputError(f"{path}: invalid JSON ({exc})") from exc


def _json_default(obj):
    import numpy as np

    if isinstance(obj, np.generic):
        return obj.item()
    if isinstance(obj, np.ndarray):
        return obj.tolist()
    if isinstance(obj, Path):
        return str(obj)
    raise TypeError(f"not JSON serialisable: {type(obj).__name__}")
