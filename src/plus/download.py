"""`plus download`: one artefact from an ordered list of mirrors, or a verified local copy.

Mirrors are tried in order. A transfer goes to a partial file of its own mirror beside the output
(`.<name>.<tag>.part`, with `.part.json` holding the mirror's URL and validators), so a transfer that breaks
off resumes from the same mirror (HTTP Range, guarded by If-Range) and bytes of two mirrors are never joined.
A mirror that ignores the Range header (HTTP 200) restarts from byte 0.

A mirror is given up, with one log line naming it and the reason, on an HTTP error, an HTML or XML error
page (S3 answers 403 with an XML body, some hosts 200 with an HTML page), content that does not match the
output's type (gzip or tar magic for .gz/.tar.gz/.tgz/.tar, a first '>' for .fasta/.fa), a truncated or
corrupt gzip stream, a checksum mismatch, or a connection failure that persists over `retries` attempts.
The output is renamed into place only when every check passes: it is never half-written, and an existing
copy stays untouched when every mirror fails.

A local copy (`--path`) gets the same checks (sha256, type, the whole gzip stream), then is hard-linked (or
copied, across file systems) into place; nothing is downloaded.

When no checksum is configured (the release publishes none), the digest is written to `<out>.sha256` so it
can be pinned. `<out>.source.json` records where the file came from; `plus download --check` reads it.

Schemes: http and https (resumable), ftp and file (through urllib: a broken transfer restarts from byte 0).
"""

from __future__ import annotations

import contextlib
import ftplib
import hashlib
import http.client
import json
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
import zlib
from pathlib import Path
from urllib.parse import urlsplit

from plus import __version__
from plus.io import InputError

GZIP_MAGIC = b"\x1f\x8b"
HEAD = 512  # bytes sniffed for the type checks
# an HTML or XML document (error pages: S3's <?xml ...><Error>, HTML 403/404 pages)
MARKUP = re.compile(rb"^\s*<(?:!doctype\s+html|html|\?xml|error|head|body|title)\b", re.IGNORECASE)
RETRY_HTTP = {408, 425, 429, 500, 502, 503, 504}  # worth another attempt on the same mirror
CHUNK = 1 << 16
FTP_PERMANENT = re.compile(r"ftp error: (?:error_perm\(')?5\d\d")  # 550 no such file, 530 login refused


class MirrorFailed(Exception):
    """This mirror cannot deliver the artefact: the next mirror is tried."""


class Transient(Exception):
    """A failure worth another attempt on the same mirror (resuming what it already sent)."""


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def show(data: bytes, n: int = 60) -> str:
    """The first bytes of a body as a short one-line repr."""
    return repr(" ".join(data[: 2 * n].decode("latin-1").split())[:n])


def expected_kind(name: str) -> tuple[str | None, str | None]:
    """(outer, inner) type implied by an output file name: outer gzip/tar/fasta or None; inner: what the
    gzip stream holds (tar for .tar.gz/.tgz, fasta for .fasta.gz/.fa.gz), or None."""
    name = name.lower()
    if name.endswith((".tar.gz", ".tgz")):
        return "gzip", "tar"
    if name.endswith((".fasta.gz", ".fa.gz")):
        return "gzip", "fasta"
    if name.endswith(".gz"):
        return "gzip", None
    if name.endswith(".tar"):
        return "tar", None
    if name.endswith((".fasta", ".fa")):
        return "fasta", None
    return None, None


def content_problem(head: bytes, kind: str | None, complete: bool = True) -> str | None:
    """Why `head` (the first bytes of a body) cannot be an artefact of type `kind`, or None. With
    `complete` False the body goes on, so a head too short for the tar magic is not judged yet."""
    if not head:
        return "empty body"
    if MARKUP.match(head):
        return "an HTML/XML page, not data"
    if kind == "gzip" and head[:2] != GZIP_MAGIC:
        return "not gzip data"
    if kind == "tar" and (len(head) >= 262 or complete) and head[257:262] != b"ustar":
        return "not a tar archive"
    if kind == "fasta" and head.lstrip()[:1] != b">":
        return "not FASTA (no leading '>')"
    return None


class _Inflate:
    """Incremental check of a (multi-member) gzip stream; keeps the first decompressed bytes."""

    def __init__(self):
        self.z, self.head, self.started, self.members = zlib.decompressobj(31), b"", False, 0

    def feed(self, data: bytes) -> None:
        while data:
            if not self.started and self.members:
                data = data.lstrip(b"\0")  # zero padding after the last member, as gzip(1) allows
                if not data:
                    return
            self.started = True
            out = self.z.decompress(data, 1 << 22)
            if len(self.head) < HEAD:
                self.head += out[: HEAD - len(self.head)]
            if self.z.eof:
                data, self.members, self.started = self.z.unused_data, self.members + 1, False
                self.z = zlib.decompressobj(31)
            else:
                data = self.z.unconsumed_tail

    def complete(self) -> bool:
        return self.members > 0 and not self.started


def inspect_file(path, kind: str | None = None, inner: str | None = None) -> tuple[str, int, str | None]:
    """sha256, size and the first problem found (file type, gzip stream, type inside it) in one read."""
    digest, size, head, inflate, problem = hashlib.sha256(), 0, b"", None, None
    if kind == "gzip":
        inflate = _Inflate()
    with open(path, "rb") as fh:
        while block := fh.read(1 << 20):
            if len(head) < HEAD:
                head += block[: HEAD - len(head)]
            digest.update(block)
            size += len(block)
            if inflate is not None and problem is None:
                try:
                    inflate.feed(block)
                except zlib.error as exc:
                    problem = f"corrupt gzip stream ({exc})"
    problem = content_problem(head, kind) or problem
    if inflate is not None and problem is None:
        if not inflate.complete():
            problem = "truncated gzip stream"
        elif inner is not None:
            inner_problem = content_problem(inflate.head, inner)
            problem = f"gzip data that is {inner_problem}" if inner_problem else None
    return digest.hexdigest(), size, problem


def sha256sum(path, chunk: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(chunk):
            digest.update(block)
    return digest.hexdigest()


class _Part:
    """The partial transfer of one mirror, tagged with its URL and the server's validators."""

    def __init__(self, out: Path, url: str):
        tag = hashlib.sha1(url.encode()).hexdigest()[:12]
        self.url = url
        self.path = out.with_name(f".{out.name}.{tag}.part")
        self.meta_path = self.path.with_name(self.path.name + ".json")
        self.meta = {}
        with contextlib.suppress(OSError, ValueError):
            self.meta = json.loads(self.meta_path.read_text())
        if self.meta.get("url") != url:
            self.reset()

    def size(self) -> int:
        return self.path.stat().st_size if self.meta and self.path.exists() else 0

    def start(self, headers) -> None:
        self.meta = {"url": self.url, "etag": headers.get("ETag"), "last_modified": headers.get("Last-Modified")}
        self.meta_path.write_text(json.dumps(self.meta) + "\n")

    def reset(self) -> None:
        self.meta = {}
        for p in (self.path, self.meta_path):
            with contextlib.suppress(FileNotFoundError):
                p.unlink()


def _content_range(value: str | None) -> tuple[int | None, int | None]:
    """(first byte, total) of a Content-Range header such as 'bytes 100-199/200' or 'bytes */200'."""
    m = re.match(r"bytes\s+(?:(\d+)-\d+|\*)/(\d+|\*)", value or "")
    if not m:
        return None, None
    start, total = m.groups()
    return (int(start) if start else None), (int(total) if total and total != "*" else None)


def _http_error(exc: urllib.error.HTTPError) -> str:
    body = b""
    with contextlib.suppress(Exception):
        body = exc.read(HEAD)
    return f"HTTP {exc.code} {exc.reason}" + (f", body {show(body)}" if body else "")


def _open(url: str, headers: dict, timeout: float):
    try:
        return urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout)
    except urllib.error.HTTPError:
        raise
    except ValueError as exc:  # unknown url type, malformed URL
        raise MirrorFailed(f"invalid URL ({exc})") from exc
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        reason = getattr(exc, "reason", exc)
        if isinstance(reason, FileNotFoundError | ftplib.error_perm) or FTP_PERMANENT.search(str(reason)):
            raise MirrorFailed(f"not found ({reason})") from exc
        raise Transient(f"connection failed ({reason})") from exc


def _read(resp, size: int) -> bytes:
    try:
        return resp.read(size)
    except http.client.IncompleteRead as exc:
        raise _Cut(exc.partial) from exc
    except (OSError, http.client.HTTPException) as exc:
        raise _Cut(b"", str(exc)) from exc


class _Cut(Exception):
    def __init__(self, partial: bytes, reason: str = "connection closed early"):
        super().__init__(reason)
        self.partial, self.reason = partial, reason


def fetch(url: str, part: _Part, kind: str | None, timeout: float, log=_log) -> None:
    """Bring `part` up to the complete file behind `url`; raises Transient (retry) or MirrorFailed."""
    have = part.size()
    headers = {"User-Agent": f"plus-workflow/{__version__} (python-urllib)"}
    if have and urlsplit(url).scheme not in ("http", "https"):
        log(f"{url}: {urlsplit(url).scheme}:// cannot resume; restarting from byte 0")
        part.reset()
        have = 0
    if have:
        headers["Range"] = f"bytes={have}-"
        validator = part.meta.get("etag") or part.meta.get("last_modified")
        if validator:
            headers["If-Range"] = validator
    try:
        resp = _open(url, headers, timeout)
    except urllib.error.HTTPError as exc:
        if exc.code == 416 and have:
            if _content_range(exc.headers.get("Content-Range"))[1] == have:
                return  # the partial file already holds every byte
            part.reset()
            raise Transient(f"HTTP 416 for a resume at byte {have}: restarting from byte 0") from exc
        reason = _http_error(exc)
        raise (Transient if exc.code in RETRY_HTTP else MirrorFailed)(reason) from exc
    with resp:
        status = getattr(resp, "status", None)
        length = resp.headers.get("Content-Length")
        length = int(length) if length and length.isdigit() else None
        if have and status == 206:
            if _content_range(resp.headers.get("Content-Range"))[0] != have:
                part.reset()
                raise Transient(f"HTTP 206 does not start at byte {have}: restarting from byte 0")
            mode, total = "ab", (have + length if length is not None else None)
            first = b""
        else:
            if have:
                log(f"{url}: no range support (HTTP {status} to a Range request): restarting from byte 0")
            have, mode, total = 0, "wb", length
            try:
                first = _read(resp, CHUNK)
            except _Cut as cut:
                first = cut.partial
                if not first:
                    raise Transient(f"transfer cut before the first byte ({cut.reason})") from cut
            problem = content_problem(first[:HEAD], kind, complete=len(first) < CHUNK)
            if problem:
                part.reset()
                raise MirrorFailed(f"{problem}: first bytes {show(first)}")
            part.start(resp.headers)
        with open(part.path, mode) as out:
            out.write(first)
            while True:
                try:
                    chunk = _read(resp, CHUNK)
                except _Cut as cut:
                    out.write(cut.partial)
                    out.flush()
                    raise Transient(f"transfer cut at byte {out.tell()} ({cut.reason})") from cut
                if not chunk:
                    break
                out.write(chunk)
    size = part.size()
    if total is not None and size < total:
        raise Transient(f"transfer cut at byte {size} of {total}")
    if total is not None and size > total:
        part.reset()
        raise MirrorFailed(f"{size} bytes received, {total} announced")


def _from_mirror(url, part, kind, retries, timeout, wait, label, log) -> None:
    for attempt in range(1, retries + 1):
        try:
            return fetch(url, part, kind, timeout, log)
        except Transient as exc:
            if attempt == retries:
                raise MirrorFailed(f"{exc} (after {retries} attempts)") from exc
            resume = f", resuming at byte {part.size()}" if part.size() else ""
            log(f"{label}: attempt {attempt}/{retries} failed: {exc}; retrying in {wait:g} s{resume}")
            time.sleep(wait)


def _record(out: Path, source: str, how: str, size: int, digest: str, pinned: str) -> None:
    """`<out>.source.json` (where the file came from) and, when nothing is pinned, `<out>.sha256`."""
    info = {"file": out.name, "source": source, "how": how, "size": size, "sha256": digest,
            "pinned_sha256": pinned or None}
    Path(f"{out}.source.json").write_text(json.dumps(info, indent=2) + "\n")
    if not pinned:
        Path(f"{out}.sha256").write_text(f"{digest}  {out.name}\n")


def _clean_partials(out: Path) -> None:
    for p in out.parent.glob(f".{glob_escape(out.name)}.*.part*"):
        with contextlib.suppress(FileNotFoundError):
            p.unlink()


def glob_escape(name: str) -> str:
    return re.sub(r"([*?\[])", r"[\1]", name)


def _already_there(out: Path, sha256: str, kind, inner, log) -> bool:
    if not (sha256 and out.is_file()):
        return False
    digest, _, problem = inspect_file(out, kind, inner)
    if digest == sha256 and problem is None:
        log(f"{out}: already present with the pinned sha256; nothing to do")
        return True
    return False


def download(urls, out, sha256: str = "", retries: int = 5, timeout: float = 60.0, wait: float = 5.0,
             is_gzip: bool = False, log=_log) -> str:
    """Fetch `out` from the first mirror in `urls` that delivers a valid file; returns its sha256."""
    urls = [urls] if isinstance(urls, str) else list(urls)
    out = Path(out)
    if not urls:
        raise InputError(f"{out}: no mirror URL given")
    out.parent.mkdir(parents=True, exist_ok=True)
    kind, inner = expected_kind(out.name)
    kind = "gzip" if is_gzip else kind
    if _already_there(out, sha256, kind, inner, log):
        return sha256
    failures = []
    for i, url in enumerate(urls, 1):
        label = f"mirror {i}/{len(urls)} {url}"
        part = _Part(out, url)
        try:
            _from_mirror(url, part, kind, retries, timeout, wait, label, log)
            digest, size, problem = inspect_file(part.path, kind, inner)
            if problem:
                raise MirrorFailed(problem)
            if sha256 and digest != sha256:
                raise MirrorFailed(f"sha256 {digest} does not match the config's {sha256}")
        except MirrorFailed as exc:
            if part.path.exists() and not isinstance(exc.__cause__, Transient):
                part.reset()  # complete but wrong: nothing worth resuming
            log(f"{label}: {exc}; " + ("trying the next mirror" if i < len(urls) else "no mirror left"))
            failures.append(f"{url}: {exc}")
            continue
        os.replace(part.path, out)
        part.reset()
        _clean_partials(out)
        _record(out, url, f"mirror {i}/{len(urls)}", size, digest, sha256)
        log(f"{out}: {size} bytes from {label}, sha256 {digest}" + ("" if sha256 else " (not pinned: "
            f"recorded in {out}.sha256; copy it into the config to pin this release)"))
        return digest
    raise InputError(f"{out}: every mirror failed ({len(urls)} tried): " + " | ".join(failures))


def use_local(path, out, sha256: str = "", is_gzip: bool = False, log=_log) -> str:
    """Verify the local copy `path` (sha256, type, gzip stream) and link or copy it to `out`; no network."""
    src, out = Path(path).expanduser(), Path(out)
    if not src.is_file():
        raise InputError(f"{src}: local copy not found")
    kind, inner = expected_kind(out.name)
    kind = "gzip" if is_gzip else kind
    digest, size, problem = inspect_file(src, kind, inner)
    if problem:
        raise InputError(f"{src}: {problem}; local copy rejected")
    if sha256 and digest != sha256:
        raise InputError(f"{src}: sha256 {digest} does not match the config's {sha256}; local copy rejected")
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.local.tmp")
    with contextlib.suppress(FileNotFoundError):
        tmp.unlink()
    try:
        os.link(src, tmp)
        how = "hard link"
    except OSError:
        shutil.copyfile(src, tmp)
        how, copied = "copy", tmp.stat().st_size
        if copied != size:
            tmp.unlink()
            raise InputError(f"{src}: the copy to {out} came out {copied} bytes, not {size}") from None
    os.replace(tmp, out)
    _record(out, str(src.resolve()), f"local copy, {how}", size, digest, sha256)
    log(f"{out}: {size} bytes, {how} of the local copy {src}, sha256 {digest}")
    return digest


def check(entries: list[str], log=print) -> int:
    """Print, per downloaded file (`FILE` or `FILE=PINNED_SHA256`), its source, size and sha256; returns the
    number of files whose sha256 differs from the pinned one."""
    rows, bad = [("file", "source", "size", "sha256", "config")], 0
    for entry in entries:
        name, _, pinned = entry.partition("=")
        path = Path(name)
        if not path.is_file():
            raise InputError(f"{path}: not downloaded yet (run `snakemake downloads` first)")
        source = "?"
        with contextlib.suppress(OSError, ValueError, KeyError):
            info = json.loads(Path(f"{path}.source.json").read_text())
            source = f"{info['source']} ({info['how']})"
        digest = sha256sum(path)
        if not pinned:
            status = "not pinned: copy this sha256 into the config"
        elif pinned == digest:
            status = "pinned, matches"
        else:
            status, bad = f"MISMATCH: config pins {pinned}", bad + 1
        rows.append((str(path), source, str(path.stat().st_size), digest, status))
    for row in rows:
        log("\t".join(row))
    return bad


def add_parser(subparsers) -> None:
    """`plus download`."""
    p = subparsers.add_parser(
        "download",
        help="fetch one artefact from its mirrors in turn, or verify a local copy (resume, checks, atomic)",
    )
    p.add_argument("--url", action="append", default=[], help="a mirror; repeat it: tried in the given order")
    p.add_argument("--path", help="a local copy: verified, then linked or copied to --out (no download)")
    p.add_argument("--out")
    p.add_argument("--sha256", default="", help="expected sha256 (empty: record it on first download)")
    p.add_argument("--gzip", action="store_true", help="check the gzip stream (automatic for *.gz outputs)")
    p.add_argument("--retries", type=int, default=5, help="attempts per mirror (a broken transfer resumes)")
    p.add_argument("--timeout", type=float, default=60.0, help="seconds without data before an attempt fails")
    p.add_argument("--check", nargs="*", metavar="FILE[=SHA256]",
                   help="print source, size and sha256 of downloaded files (vs the pinned sha256)")
    p.set_defaults(func=run, usage_error=p.error)


def run(a) -> None:
    if a.check is not None:
        if a.url or a.path or a.out:
            a.usage_error("--check takes no --url, --path or --out")
        bad = check(a.check)
        if bad:
            raise InputError(f"{bad} file(s) differ from the sha256 pinned in the config")
        return
    if not a.out or not (a.url or a.path):
        a.usage_error("give --out and --url (repeatable) or --path")
    if a.path:
        if a.url:
            print(f"local copy {a.path} given: the {len(a.url)} mirror URL(s) are not used", file=sys.stderr)
        use_local(a.path, a.out, a.sha256.strip(), a.gzip)
    else:
        download(a.url, a.out, a.sha256.strip(), a.retries, a.timeout, is_gzip=a.gzip)
