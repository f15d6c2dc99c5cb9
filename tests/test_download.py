"""`plus download` against local file:// fixtures: checksum enforced, truncated gzip rejected, nothing
half-written, checksum recorded when the config has none."""

from __future__ import annotations

import gzip
import hashlib
from pathlib import Path

import pytest

from plus.download import download
from plus.io import InputError

ROOT = Path(__file__).parents[1]
REAL = ROOT / "data/embedded/solubility/test_tgt"  # a real DeepSol file with a published sha256
REAL_SHA = "ec73662e8911d9bc6de2e9c7d5147b66fb897651c2447f325832c2749c0e48d7"


def test_download_verifies_the_configured_checksum(tmp_path):
    out = tmp_path / "deepsol/test_tgt"
    assert download(REAL.as_uri(), out, REAL_SHA, retries=1) == REAL_SHA
    assert out.read_bytes() == REAL.read_bytes()
    assert not list(tmp_path.rglob("*.part"))


def test_checksum_mismatch_is_rejected_and_nothing_is_left(tmp_path):
    out = tmp_path / "x/test_tgt"
    with pytest.raises(InputError, match="does not match"):
        download(REAL.as_uri(), out, "0" * 64, retries=1)
    assert not out.exists() and not list(tmp_path.rglob("*.part"))


def test_truncated_gzip_is_rejected(tmp_path):
    good = tmp_path / "Pfam-A.fasta.gz"
    with gzip.open(good, "wb") as fh:
        fh.write(b">A/1-30 A.1 PF00001.1;fam;\n" + b"ACDEFGHIKL" * 300 + b"\n")
    cut = tmp_path / "cut.gz"
    cut.write_bytes(good.read_bytes()[:-20])
    out = tmp_path / "dl/Pfam-A.fasta.gz"
    with pytest.raises(InputError, match="truncated or corrupt gzip"):
        download(cut.as_uri(), out, "", is_gzip=True, retries=1)
    assert not out.exists() and not list((tmp_path / "dl").iterdir())
    download(good.as_uri(), out, "", is_gzip=True, retries=1)
    recorded = Path(f"{out}.sha256").read_text().split()[0]
    assert recorded == hashlib.sha256(good.read_bytes()).hexdigest()


def test_unreachable_url_fails_after_retries(tmp_path):
    with pytest.raises(InputError, match="download failed after 2 attempts"):
        download((tmp_path / "missing").as_uri(), tmp_path / "out", "", retries=2, wait=0)
