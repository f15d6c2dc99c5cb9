"""`plus download` against local servers on 127.0.0.1 (HTTP; a minimal FTP server) and file:// URLs:
mirrors in order, error pages and wrong file types rejected, per-mirror resume, checksums, local copies,
`--check`, and the workflow's download rules (dry run, lint)."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import random
import socket
import subprocess
import sys
import tarfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from plus import cli
from plus.download import download, use_local
from plus.io import InputError

ROOT = Path(__file__).parents[1]
REAL = ROOT / "data/embedded/solubility/test_tgt"  # a real DeepSol file with a published sha256
REAL_SHA = "ec73662e8911d9bc6de2e9c7d5147b66fb897651c2447f325832c2749c0e48d7"
S3_403 = (b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>AccessDenied</Code>'
          b"<Message>Access Denied</Message><RequestId>4442587FB7D0A2F9</RequestId></Error>")
HTML_200 = b"<!DOCTYPE html>\n<html><head><title>Page moved</title></head><body>Sorry</body></html>\n"


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def archive_bytes(n_files: int = 3) -> bytes:
    """A real .tar.gz (gzip of a ustar archive) of 200 kB per file (incompressible), deterministic."""
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.USTAR_FORMAT) as tf:
        for k in range(n_files):
            data = random.Random(k).randbytes(200_000)
            info = tarfile.TarInfo(f"task/task_{k}.json")
            info.size, info.mtime = len(data), 0
            tf.addfile(info, io.BytesIO(data))
    return gzip.compress(buf.getvalue(), mtime=0)


class Route:
    """What one URL path serves. mode: file (Range support), norange (ignores Range), status (an error
    status with `body`), page (200 with `body`). `cut`: the first `cuts` responses stop after that many
    body bytes (Content-Length announces the whole file)."""

    def __init__(self, data=b"", mode="file", status=200, body=b"", cut=None, cuts=1, ctype=None):
        self.data, self.mode, self.status, self.body, self.cut, self.cuts = data, mode, status, body, cut, cuts
        self.ctype = ctype or "application/octet-stream"
        self.requests: list[dict] = []


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def do_GET(self):
        route = self.server.routes.get(self.path)
        if route is None:
            self.send_error(404)
            return
        route.requests.append({"range": self.headers.get("Range"), "if_range": self.headers.get("If-Range")})
        if route.mode in ("status", "page"):
            self.send_response(route.status)
            self.send_header("Content-Type", "application/xml" if route.body.startswith(b"<?xml") else "text/html")
            self.send_header("Content-Length", str(len(route.body)))
            self.end_headers()
            self.wfile.write(route.body)
            return
        data, start = route.data, 0
        rng = self.headers.get("Range")
        if rng and route.mode == "file":
            start = int(rng.removeprefix("bytes=").split("-")[0])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
        else:
            self.send_response(200)
            self.send_header("Accept-Ranges", "bytes" if route.mode == "file" else "none")
        self.send_header("ETag", f'"{sha(data)[:16]}"')
        self.send_header("Content-Type", route.ctype)
        self.send_header("Content-Length", str(len(data) - start))
        self.end_headers()
        body = data[start:]
        if route.cut is not None and route.cuts > 0:
            route.cuts -= 1
            self.wfile.write(body[: route.cut])
            self.wfile.flush()
            self.close_connection = True
            self.connection.shutdown(socket.SHUT_RDWR)
            return
        self.wfile.write(body)


@pytest.fixture
def server():
    """An HTTP server on 127.0.0.1 (started and stopped here); `server.url(path)`, `server.routes`."""
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.routes = {}
    httpd.url = lambda path: f"http://127.0.0.1:{httpd.server_address[1]}{path}"
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield httpd
    httpd.shutdown()
    httpd.server_close()
    thread.join(5)


def fetch(urls, out, sha256="", **kw):
    lines = []
    kw.setdefault("retries", 3)
    digest = download(urls, out, sha256, wait=0, timeout=10, log=lines.append, **kw)
    return digest, lines


def fail(urls, out, sha256="", **kw):
    lines = []
    with pytest.raises(InputError) as err:
        download(urls, out, sha256, wait=0, timeout=10, retries=kw.pop("retries", 2), log=lines.append, **kw)
    assert "\n" not in str(err.value)
    return str(err.value), lines


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir() if ".part" in p.name or p.name.endswith(".tmp"))


# -- mirrors --------------------------------------------------------------------------------------------


def test_first_mirror_404_second_serves_the_file(server, tmp_path):
    data = archive_bytes()
    server.routes = {"/b/stability.tar.gz": Route(data)}
    urls = [server.url("/a/stability.tar.gz"), server.url("/b/stability.tar.gz")]
    out = tmp_path / "dl/stability.tar.gz"
    digest, lines = fetch(urls, out, sha(data))
    assert digest == sha(data) and out.read_bytes() == data
    assert len(lines) == 2 and lines[0].startswith(f"mirror 1/2 {urls[0]}: HTTP 404")
    assert "trying the next mirror" in lines[0] and "from mirror 2/2" in lines[1]
    source = json.loads(Path(f"{out}.source.json").read_text())
    assert source["source"] == urls[1] and source["sha256"] == sha(data) == source["pinned_sha256"]
    assert not Path(f"{out}.sha256").exists() and leftovers(out.parent) == []


@pytest.mark.parametrize("page", [Route(mode="page", status=200, body=HTML_200),
                                  Route(mode="status", status=403, body=S3_403)], ids=["html-200", "xml-403"])
def test_error_page_rejected_and_next_mirror_tried(server, tmp_path, page):
    data = archive_bytes()
    server.routes = {"/moved/x.tar.gz": page, "/ok/x.tar.gz": Route(data)}
    urls = [server.url("/moved/x.tar.gz"), server.url("/ok/x.tar.gz")]
    out = tmp_path / "x.tar.gz"
    digest, lines = fetch(urls, out, sha(data))
    assert out.read_bytes() == data
    first_bytes = "'<?xml version=\"1.0\"" if page.status == 403 else "first bytes '<!DOCTYPE html> <html><head>"
    assert lines[0].startswith(f"mirror 1/2 {urls[0]}: ") and first_bytes in lines[0]
    assert len(page.requests) == 1  # an error page is not retried


@pytest.mark.parametrize("page", [Route(mode="page", status=200, body=HTML_200),
                                  Route(mode="status", status=403, body=S3_403)], ids=["html-200", "xml-403"])
def test_error_page_from_the_only_mirror_keeps_the_previous_copy(server, tmp_path, page):
    server.routes = {"/x.tar.gz": page}
    out = tmp_path / "x.tar.gz"
    msg, lines = fail([server.url("/x.tar.gz")], out)
    assert msg.startswith(f"{out}: every mirror failed (1 tried): {server.url('/x.tar.gz')}: ")
    assert ("<?xml" if page.status == 403 else "<!DOCTYPE html>") in msg
    assert not out.exists() and list(tmp_path.iterdir()) == []
    good = archive_bytes(1)
    out.write_bytes(good)  # a previous good copy
    fail([server.url("/x.tar.gz")], out)
    assert out.read_bytes() == good and leftovers(tmp_path) == []


@pytest.mark.parametrize("name, served, reason", [
    ("a.tar.gz", b"plain text, not compressed\n", "not gzip data"),
    ("a.gz", b"", "empty body"),
    ("deeploc_data.fasta", b"MKVLAAGIVALLL\n", "not FASTA"),
    ("a.tar.gz", gzip.compress(b"x" * 600, mtime=0), "gzip data that is not a tar archive"),
    ("Pfam-A.fasta.gz", gzip.compress(b"MKVL\n", mtime=0), "gzip data that is not FASTA"),
    ("a.tar.gz", archive_bytes(1)[:-40], "truncated gzip stream"),
])
def test_content_that_does_not_match_the_file_type_is_rejected(server, tmp_path, name, served, reason):
    server.routes = {"/f": Route(served)}
    msg, lines = fail([server.url("/f")], tmp_path / name)
    assert reason in msg and reason in lines[0]
    assert list(tmp_path.iterdir()) == []


def test_checksum_mismatch_on_every_mirror(server, tmp_path):
    server.routes = {"/a/t.tar.gz": Route(archive_bytes(1)), "/b/t.tar.gz": Route(archive_bytes(2))}
    urls = [server.url("/a/t.tar.gz"), server.url("/b/t.tar.gz")]
    out = tmp_path / "t.tar.gz"
    msg, lines = fail(urls, out, "0" * 64)
    assert msg.count("does not match the config's " + "0" * 64) == 2 and all(u in msg for u in urls)
    assert len(lines) == 2 and "no mirror left" in lines[1]
    assert list(tmp_path.iterdir()) == []


def test_http_5xx_is_retried_on_the_same_mirror(server, tmp_path):
    data = archive_bytes(1)
    flaky = Route(mode="status", status=503, body=b"")
    server.routes = {"/t.tar.gz": flaky}
    out = tmp_path / "t.tar.gz"
    msg, lines = fail([server.url("/t.tar.gz")], out, retries=3)
    assert len(flaky.requests) == 3 and "HTTP 503" in msg and "(after 3 attempts)" in msg
    assert [line.split(": attempt ")[1][:3] for line in lines[:2]] == ["1/3", "2/3"]
    server.routes = {"/t.tar.gz": Route(data)}
    assert fetch([server.url("/t.tar.gz")], out, sha(data))[0] == sha(data)


# -- resume ---------------------------------------------------------------------------------------------


def test_cut_transfer_resumes_from_the_same_mirror(server, tmp_path):
    data = archive_bytes()
    first, second = Route(data, cut=100_000), Route(archive_bytes(2))
    server.routes = {"/a/t.tar.gz": first, "/b/t.tar.gz": second}
    out = tmp_path / "t.tar.gz"
    digest, lines = fetch([server.url("/a/t.tar.gz"), server.url("/b/t.tar.gz")], out, sha(data))
    assert out.read_bytes() == data and digest == sha(data)
    assert [r["range"] for r in first.requests] == [None, "bytes=100000-"]
    assert first.requests[1]["if_range"] == f'"{sha(data)[:16]}"'  # resume only if the file is unchanged
    assert second.requests == []
    assert "attempt 1/3 failed: transfer cut at byte 100000" in lines[0] and "resuming at byte 100000" in lines[0]
    assert leftovers(tmp_path) == []


def test_mirror_without_range_support_restarts_cleanly(server, tmp_path):
    data = archive_bytes()
    route = Route(data, mode="norange", cut=100_000)
    server.routes = {"/t.tar.gz": route}
    out = tmp_path / "t.tar.gz"
    digest, lines = fetch([server.url("/t.tar.gz")], out, sha(data))
    assert out.read_bytes() == data and digest == sha(data)
    assert [r["range"] for r in route.requests] == [None, "bytes=100000-"]
    assert any("no range support (HTTP 200 to a Range request): restarting from byte 0" in line for line in lines)


def test_bytes_of_two_mirrors_are_never_joined(server, tmp_path):
    """Mirror 1 breaks off for good; mirror 2 starts from byte 0; mirror 1's partial is not reused."""
    data = archive_bytes()
    first, second = Route(data, cut=100_000, cuts=99), Route(data)
    server.routes = {"/a/t.tar.gz": first, "/b/t.tar.gz": second}
    out = tmp_path / "t.tar.gz"
    digest, lines = fetch([server.url("/a/t.tar.gz"), server.url("/b/t.tar.gz")], out, sha(data), retries=2)
    assert out.read_bytes() == data
    assert len(first.requests) == 2 and second.requests == [{"range": None, "if_range": None}]
    assert "mirror 1/2" in lines[1] and "(after 2 attempts)" in lines[1]
    assert leftovers(tmp_path) == []


def test_partial_of_a_failed_run_resumes_in_the_next_run(server, tmp_path):
    data = archive_bytes()
    route = Route(data, cut=150_000, cuts=1)
    server.routes = {"/t.tar.gz": route}
    out = tmp_path / "t.tar.gz"
    fail([server.url("/t.tar.gz")], out, sha(data), retries=1)
    assert len(leftovers(tmp_path)) == 2  # the mirror's partial file and its tag
    fetch([server.url("/t.tar.gz")], out, sha(data))
    assert out.read_bytes() == data and route.requests[-1]["range"] == "bytes=150000-"


# -- local copies, existing files, file:// and ftp:// ----------------------------------------------------


def test_local_copy_is_verified_and_used_without_network(server, tmp_path):
    data = archive_bytes()
    src = tmp_path / "shared/Pfam-A.tar.gz"
    src.parent.mkdir()
    src.write_bytes(data)
    route = Route(data)
    server.routes = {"/t.tar.gz": route}
    out = tmp_path / "resources/t.tar.gz"
    code = cli.main(["download", "--path", str(src), "--url", server.url("/t.tar.gz"), "--out", str(out),
                     "--sha256", sha(data)])
    assert code == 0 and out.read_bytes() == data and route.requests == []
    assert os.path.samefile(src, out)  # hard-linked (same file system)
    info = json.loads(Path(f"{out}.source.json").read_text())
    assert info["source"] == str(src.resolve()) and info["how"] == "local copy, hard link"


@pytest.mark.parametrize("make, needle", [
    (lambda p: p.write_bytes(archive_bytes(1)), "sha256 "),
    (lambda p: p.write_bytes(archive_bytes()[:-100]), "truncated gzip stream"),
    (lambda p: p.write_bytes(S3_403), "an HTML/XML page"),
    (lambda p: None, "local copy not found"),
])
def test_bad_local_copy_is_a_one_line_error_naming_the_file(tmp_path, make, needle):
    src = tmp_path / "copy.tar.gz"
    make(src)
    out = tmp_path / "resources/t.tar.gz"
    with pytest.raises(InputError) as err:
        use_local(src, out, sha(archive_bytes()), log=lambda _: None)
    assert str(err.value).startswith(f"{src}: ") and needle in str(err.value) and "\n" not in str(err.value)
    assert not out.exists()


def test_verified_existing_file_is_not_downloaded_again(server, tmp_path):
    data = archive_bytes(1)
    route = Route(data)
    server.routes = {"/t.tar.gz": route}
    out = tmp_path / "t.tar.gz"
    fetch([server.url("/t.tar.gz")], out, sha(data))
    digest, lines = fetch([server.url("/t.tar.gz")], out, sha(data))
    assert digest == sha(data) and len(route.requests) == 1 and "already present" in lines[0]


def test_file_urls_checksum_and_record_when_unpinned(tmp_path):
    out = tmp_path / "deepsol/test_tgt"
    assert fetch(REAL.as_uri(), out, REAL_SHA)[0] == REAL_SHA
    assert out.read_bytes() == REAL.read_bytes()
    missing = fail([(tmp_path / "missing").as_uri()], tmp_path / "x/out")[0]
    assert "not found" in missing
    other = tmp_path / "other/test_tgt"
    digest, lines = fetch(REAL.as_uri(), other)
    assert Path(f"{other}.sha256").read_text().split()[0] == digest == REAL_SHA and "not pinned" in lines[-1]


class FTPServer:
    """Just enough of RFC 959 for urllib's ftp:// handler (anonymous login, CWD, TYPE, PASV, RETR), serving
    `files` {path: bytes} from 127.0.0.1; `cut` sends only the first bytes of the first transfer."""

    def __init__(self, files: dict[str, bytes], cut: int | None = None):
        self.files, self.cut, self.retrieved = files, cut, []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def url(self, path):
        return f"ftp://127.0.0.1:{self.port}{path}"

    def _serve(self):
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._session, args=(conn,), daemon=True).start()

    def _session(self, conn):
        f, cwd, data = conn.makefile("rwb", buffering=0), "", None

        def say(line):
            f.write(line.encode() + b"\r\n")

        say("220 test server")
        for raw in f:
            cmd, _, arg = raw.decode().strip().partition(" ")
            cmd = cmd.upper()
            if cmd == "USER":
                say("331 password please")
            elif cmd == "PASS":
                say("230 logged in")
            elif cmd == "TYPE":
                say("200 ok")
            elif cmd == "CWD":
                target = (arg if arg.startswith("/") else f"{cwd}/{arg}").replace("//", "/")
                if any(path.startswith(target.rstrip("/") + "/") for path in self.files) or target == "/":
                    cwd = target
                    say("250 ok")
                else:
                    say("550 no such directory")
            elif cmd == "PWD":
                say(f'257 "{cwd or "/"}"')
            elif cmd == "PASV":
                data = socket.create_server(("127.0.0.1", 0))
                p = data.getsockname()[1]
                say(f"227 Entering Passive Mode (127,0,0,1,{p // 256},{p % 256})")
            elif cmd == "RETR":
                path = f"{cwd.rstrip('/')}/{arg}".replace("//", "/")
                if path not in self.files:
                    say("550 no such file")
                    continue
                say(f"150 opening ({len(self.files[path])} bytes)")
                dconn, _ = data.accept()
                body = self.files[path]
                if self.cut is not None:
                    body, self.cut = body[: self.cut], None
                dconn.sendall(body)
                dconn.close()
                data.close()
                self.retrieved.append(path)
                say("226 done")
            elif cmd == "QUIT":
                say("221 bye")
                break
            else:
                say("502 not implemented")
        conn.close()

    def close(self):
        self.sock.close()


def test_ftp_mirror_downloads_and_a_cut_transfer_restarts_from_byte_0(tmp_path):
    seq = "".join(random.Random(0).choices("ACDEFGHIKLMNPQRSTVWY", k=60_000)).encode()
    data = gzip.compress(b">A0A/1-30 A0A.1 PF00001.26;7tm_1;\n" + seq + b"\n", mtime=0)
    ftp = FTPServer({"/pub/Pfam27.0/Pfam-A.fasta.gz": data}, cut=1000)
    try:
        out = tmp_path / "Pfam-A.fasta.gz"
        digest, lines = fetch([ftp.url("/pub/Pfam27.0/Pfam-A.fasta.gz")], out, sha(data))
        assert out.read_bytes() == data and digest == sha(data)
        assert ftp.retrieved == ["/pub/Pfam27.0/Pfam-A.fasta.gz"] * 2
        assert "ftp:// cannot resume; restarting from byte 0" in "\n".join(lines)
        msg, _ = fail([ftp.url("/pub/Pfam28.0/Pfam-A.fasta.gz")], tmp_path / "x/Pfam-A.fasta.gz", retries=3)
        assert "550" in msg and "after" not in msg  # a missing file is not retried
    finally:
        ftp.close()


# -- CLI and workflow -----------------------------------------------------------------------------------


def test_cli_repeated_url_and_check(server, tmp_path, capsys):
    data, other = archive_bytes(), b"0\n1\n"
    server.routes = {"/b/t.tar.gz": Route(data), "/tgt": Route(other)}
    out, tgt = tmp_path / "t.tar.gz", tmp_path / "tgt"
    assert cli.main(["download", "--url", server.url("/a/t.tar.gz"), "--url", server.url("/b/t.tar.gz"),
                     "--out", str(out), "--sha256", sha(data), "--retries", "1"]) == 0
    assert cli.main(["download", "--url", server.url("/tgt"), "--out", str(tgt)]) == 0
    capsys.readouterr()
    assert cli.main(["download", "--check", f"{out}={sha(data)}", str(tgt)]) == 0
    rows = [line.split("\t") for line in capsys.readouterr().out.splitlines()]
    assert rows[0] == ["file", "source", "size", "sha256", "config"]
    assert rows[1] == [str(out), f"{server.url('/b/t.tar.gz')} (mirror 2/2)", str(len(data)), sha(data),
                       "pinned, matches"]
    assert rows[2][1:4] == [f"{server.url('/tgt')} (mirror 1/1)", "4", sha(other)]
    assert rows[2][4].startswith("not pinned")
    assert cli.main(["download", "--check", f"{tgt}={'0' * 64}"]) == 2
    assert "differ from the sha256 pinned" in capsys.readouterr().err


def test_workflow_dry_run_lists_the_mirrors_and_the_corrected_data(tmp_path):
    for name in ("config.yaml", "data", "demo", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "-n", "-p", "all"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    for name in ("stability", "fluorescence", "secondary_structure"):
        assert f"--url http://s3.amazonaws.com/songlabdata/proteindata/data_raw_pytorch/{name}.tar.gz" in res.stdout
    assert "proteindata/data_raw/" not in res.stdout
    assert ("--url https://ftp.ebi.ac.uk/pub/databases/Pfam/releases/Pfam27.0/Pfam-A.fasta.gz --url "
            "ftp://ftp.ebi.ac.uk/pub/databases/Pfam/releases/Pfam27.0/Pfam-A.fasta.gz") in res.stdout
    # the corrected ablation gets its own conversion where a data switch changes the data, and uses it
    for task, switch in [("localization", "dual_as_first"), ("transmembrane", "drop_signal_peptides")]:
        assert (f"--outdir results/data_corrected/{task} --seed 2020   --fidelity "
                f"'{{\"data_{task}_{switch}\":false}}'") in res.stdout
        assert f"plus finetune --task {task} --data results/data_corrected/{task} --pretrained " \
               f"results/pretrain/plus-rnn_base/corrected/" in res.stdout
    assert "results/data_corrected/solubility" not in res.stdout


def test_local_path_in_the_config_replaces_the_mirrors_and_check_lists_the_pins(tmp_path):
    for name in ("config.yaml", "data", "demo", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    (tmp_path / "local.yaml").write_text("pfam: {path: /shared/Pfam-A.fasta.gz}\n"
                                         "downloads: {deeploc: {path: /shared/deeploc_data.fasta}}\n")
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
                          "config.yaml", "local.yaml", "-n", "-p", "downloads", "downloads_check"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr[-2000:]
    assert "plus download --path /shared/Pfam-A.fasta.gz --out resources/pfam/Pfam27.0/Pfam-A.fasta.gz" in res.stdout
    assert "plus download --path /shared/deeploc_data.fasta --out resources/downloads/deeploc/" in res.stdout
    assert "ftp.ebi.ac.uk" not in res.stdout
    check = next(line for line in res.stdout.splitlines() if "plus download --check" in line)
    assert ("resources/downloads/deepsol_test_tgt/test_tgt="
            "ec73662e8911d9bc6de2e9c7d5147b66fb897651c2447f325832c2749c0e48d7") in check
    assert " resources/pfam/Pfam27.0/Pfam-A.fasta.gz " in f"{check} "  # not pinned yet: no '='


def test_schema_takes_url_urls_or_path():
    import yaml
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    base = yaml.safe_load((ROOT / "config.yaml").read_text())
    schema = str(ROOT / "schemas/config.schema.yaml")
    for entry in ({"url": "http://a/x.fasta"}, {"urls": ["http://a/x.fasta", "ftp://b/x.fasta"]},
                  {"path": "/shared/x.fasta", "sha256": ""}, {"path": "/s/x.fasta", "urls": ["http://a/x.fasta"]},
                  {"url": "http://a/x", "urls": ["http://b/x"]}):
        validate({**base, "downloads": {"x": entry}}, schema)
    for entry in ({"sha256": ""}, {"urls": []}, {"url": ""}, {"urls": ["http://a/x"], "sha256": "abc"}):
        with pytest.raises(WorkflowError):
            validate({**base, "downloads": {"x": entry}}, schema)


def test_download_rules_run_for_real_from_local_mirrors_and_check(tmp_path):
    """`snakemake downloads_check` with every artefact on file:// mirrors (the canonical fixtures) after a
    missing first mirror, and Pfam from a local copy: the rules' shell commands really run."""
    import yaml

    fix = ROOT / "tests/fixtures/canonical"
    files = {"scope": fix / "scope.tar.gz", "deeploc": fix / "deeploc_data.fasta",
             "tape_stability": fix / "stability.tar.gz", "tape_fluorescence": fix / "fluorescence.tar.gz",
             "tape_secondary_structure": fix / "secondary_structure.tar.gz",
             "transmembrane": fix / "transmembrane.tar.gz"}
    files.update({f"deepsol_{k}": fix / "deepsol" / k for k in
                  ("train_src", "train_tgt", "val_src", "val_tgt", "test_src", "test_tgt")})
    # `url` (replacing config.yaml's) is tried first, then `urls` (replacing config.yaml's lists)
    downloads = {a: {"url": (tmp_path / "gone" / p.name).as_uri(), "urls": [p.as_uri()], "sha256": ""}
                 for a, p in files.items()}
    downloads["deeploc"]["sha256"] = sha((fix / "deeploc_data.fasta").read_bytes())
    pfam = tmp_path / "shared/Pfam-A.fasta.gz"
    pfam.parent.mkdir()
    pfam.write_bytes(gzip.compress(b">A0A/1-30 A0A.1 PF00001.26;7tm_1;\nMKVLAAGIV\n", mtime=0))
    (tmp_path / "local.yaml").write_text(yaml.safe_dump({"downloads": downloads, "pfam": {"path": str(pfam)}}))
    for name in ("config.yaml", "data", "demo", "tests"):
        (tmp_path / name).symlink_to(ROOT / name)
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(ROOT / "Snakefile"), "--configfile",
                          "config.yaml", "local.yaml", "--cores", "2", "downloads_check"],
                         cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)
    assert res.returncode == 0, res.stderr[-3000:]
    rows = {r[0]: r for r in (line.split("\t") for line in (tmp_path / "logs/download/check.log").read_text()
                              .splitlines()[1:])}
    assert len(rows) == len(files) + 1
    for artefact, path in files.items():
        row = rows[f"resources/downloads/{artefact}/{path.name}"]
        assert row[1] == f"{path.as_uri()} (mirror 2/2)" and row[3] == sha(path.read_bytes())
        assert (tmp_path / row[0]).read_bytes() == path.read_bytes()
    assert rows[f"resources/downloads/deeploc/{files['deeploc'].name}"][4] == "pinned, matches"
    assert rows["resources/pfam/Pfam27.0/Pfam-A.fasta.gz"][1] == f"{pfam.resolve()} (local copy, hard link)"
    log = (tmp_path / "logs/download/scope/scope.tar.gz.log").read_text()
    assert log.startswith(f"mirror 1/2 {(tmp_path / 'gone/scope.tar.gz').as_uri()}: not found")
