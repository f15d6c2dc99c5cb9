import gzip
import hashlib
import logging
import os
import random
import zlib
from pathlib import Path

import numpy as np
import pytest

from plus.alphabet import decode, encode
from plus.data.pfam import parse_header, preprocess
from plus.data.pfam_corpus import PfamCorpus, read_pairs
from plus.data.pfam_demo import build_demo_corpus, read_stockholm
from plus.io import InputError, read_fasta, umask

PFAM = Path(__file__).resolve().parents[1] / "data" / "embedded" / "pfam"
SEEDS = sorted(PFAM.glob("pyhmmer-0.12.3/*.sto")) + sorted(PFAM.glob("biopython-1.88/*.seed.txt")) + [
    PFAM / "biopython-1.88" / "example.sth"]
DEEPLOC_TRAIN = PFAM.parent / "localization" / "deeploc_our_val_set.fasta.gz"
SMALL = dict(min_family_size=10, n_test_pairs=200, n_val_pairs=50, val_fraction=0.1)


@pytest.fixture(scope="module")
def seed_corpus(tmp_path_factory):
    path = tmp_path_factory.mktemp("demo") / "seeds.fasta.gz"
    build_demo_corpus(SEEDS, [], path, enlarge=False)
    return path


@pytest.fixture(scope="module")
def seed_out(seed_corpus, tmp_path_factory):
    out = tmp_path_factory.mktemp("pre") / "pfam"
    return out, preprocess(seed_corpus, out, seed=7, **SMALL)


def _synthetic(path: Path, n: int, n_families: int = 40, seed: int = 0, extra: str = "") -> list[str]:
    rng = random.Random(seed)
    names, lines = [], []
    for i in range(n):
        f = rng.randrange(n_families)
        seq = "".join(rng.choice("ACDEFGHIKLMNPQRSTVWY") for _ in range(rng.randint(10, 80)))
        names.append(f"SEQ{i}_X/1-{len(seq)}")
        wrapped = f"{seq[:40]}\n{seq[40:]}\n".replace("\n\n", "\n")
        lines.append(f">{names[-1]} A{i}.1 PF{f:05d}.3;Fam{f};\n{wrapped}")
    with gzip.open(path, "wt") as fh:
        fh.write("".join(lines) + extra)
    return names


def _families_of(fasta: Path) -> dict[str, str]:
    return {seq: parse_header(h)[2] for _, h, seq in read_fasta(fasta)}


def test_stockholm_to_pfam_fasta_header():
    (aln,) = read_stockholm(PFAM / "pyhmmer-0.12.3" / "XYPPX.sto")
    header, seq = aln.records()[0]
    assert header == "OPSD_SEPOF/451-455 O16005.1 PF02162.8;XYPPX;"
    assert seq == "AAPPQ"
    assert parse_header(header) == ("OPSD_SEPOF/451-455", "PF02162.8", "XYPPX")
    assert sum(len(a.rows) for path in SEEDS for a in read_stockholm(path)) == 426


def test_demo_corpus_without_search_is_the_seed_records(seed_corpus):
    records = list(read_fasta(seed_corpus))
    assert len(records) == 426
    assert {parse_header(h)[2] for _, h, _ in records} >= {"XYPPX", "Pkinase", "HAT", "SH3_11"}
    assert all(set(seq) <= set("ACDEFGHIKLMNPQRSTVWYXBZUO") for _, _, seq in records)


def test_parse_header_rejects_malformed():
    with pytest.raises(ValueError, match="malformed"):
        parse_header("SEQ1/1-20 ACC1.1")
    with pytest.raises(ValueError, match="malformed"):
        parse_header("SEQ1/1-20 ACC1.1 PF00001.1")


def test_malformed_header_names_file_and_record(tmp_path):
    path = tmp_path / "bad.fa.gz"
    _synthetic(path, 50, extra=">BROKEN/1-30 only_two_fields\nACDEFGHIKLACDEFGHIKLACDEFGHIKL\n")
    with pytest.raises(InputError, match=r"bad\.fa\.gz: record 51: malformed Pfam header"):
        preprocess(path, tmp_path / "out", seed=1, min_family_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["bad.fa.gz"]


@pytest.fixture(params=["default", "zlib"])
def inflater(request, monkeypatch):
    """Both decompressors: ISA-L's (when installed) and the zlib fallback."""
    if request.param == "zlib":
        import plus.data.fasta_blocks as fasta_blocks

        monkeypatch.setattr(fasta_blocks, "_inflate", zlib)
    return request.param


@pytest.mark.parametrize("bad, message", [
    (b">MID/1-30 only_two_fields\nACDEFGHIKL\n", r"record 21: malformed Pfam header"),
    (b"ACDEFGHIKL>ACDEFGHIKL\n", r"record 20: '>' inside the sequence"),  # continues record 20
])
def test_bad_record_inside_a_block_names_its_record(tmp_path, bad, message):
    _synthetic(tmp_path / "ok.fa.gz", 40)
    text = gzip.decompress((tmp_path / "ok.fa.gz").read_bytes())
    cut = [i for i in range(len(text)) if text.startswith(b"\n>", i)][19] + 1  # before record 21
    path = tmp_path / "mid.fa.gz"
    path.write_bytes(gzip.compress(text[:cut] + bad + text[cut:]))
    with pytest.raises(InputError, match=r"mid\.fa\.gz: " + message):
        preprocess(path, tmp_path / "out", seed=1, min_family_size=1)
    assert not (tmp_path / "out").exists()


def test_truncated_gzip_is_rejected_without_output(tmp_path, inflater):
    path = tmp_path / "full.fa.gz"
    _synthetic(path, 3000)
    cut = tmp_path / "cut.fa.gz"
    cut.write_bytes(path.read_bytes()[:-4000])
    with pytest.raises(InputError, match=r"cut\.fa\.gz: truncated gzip"):
        preprocess(cut, tmp_path / "out", seed=1, min_family_size=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.fa.gz", "full.fa.gz"]


def test_split_is_seeded_proportional_and_order_independent(tmp_path):
    names = _synthetic(tmp_path / "a.fa.gz", 4000)
    stats = preprocess(tmp_path / "a.fa.gz", tmp_path / "a", seed=3, min_len=1, min_family_size=1,
                       val_fraction=0.05, n_test_pairs=10, n_val_pairs=10)
    assert stats["split"]["test"] / 4000 == pytest.approx(0.2, abs=0.025)
    assert stats["split"]["val"] / 4000 == pytest.approx(0.8 * 0.05, abs=0.012)
    test_a = {parse_header(h)[0] for _, h, _ in read_fasta(tmp_path / "a" / "test.fa")}
    # shuffled input: the same records go to test; another seed: a different split
    with gzip.open(tmp_path / "a.fa.gz", "rt") as fh:
        records = [">" + r for r in fh.read().split(">")[1:]]
    random.Random(1).shuffle(records)
    with gzip.open(tmp_path / "b.fa.gz", "wt") as fh:
        fh.write("".join(records))
    preprocess(tmp_path / "b.fa.gz", tmp_path / "b", seed=3, min_len=1, min_family_size=1,
               n_test_pairs=10, n_val_pairs=10)
    assert {parse_header(h)[0] for _, h, _ in read_fasta(tmp_path / "b" / "test.fa")} == test_a
    preprocess(tmp_path / "a.fa.gz", tmp_path / "c", seed=4, min_len=1, min_family_size=1,
               n_test_pairs=10, n_val_pairs=10)
    assert {parse_header(h)[0] for _, h, _ in read_fasta(tmp_path / "c" / "test.fa")} != test_a
    assert len(test_a) < len(names)


def test_real_seed_corpus_filters_and_counts(seed_out):
    out, stats = seed_out
    assert (stats["input"]["records"], stats["input"]["families"]) == (426, 18)
    assert stats["split"]["test"] / 426 == pytest.approx(0.2, abs=0.06)
    assert stats["dropped_by_length"]["short"] >= 7  # the XYPPX repeats are 5 residues long
    families = [line.split("\t") for line in (out / "families.tsv").read_text().splitlines()[1:]]
    kept = {f[2] for f in families}
    assert all(int(f[3]) + int(f[4]) >= 10 for f in families)
    assert "XYPPX" not in kept and "SH3_11" not in kept and {"Pkinase", "fn3", "RRM_1"} <= kept
    corpus = PfamCorpus(out)
    assert len(corpus) == stats["after_family_filter"]["train"] == sum(int(f[3]) for f in families)
    assert corpus.lengths.min() >= 20 and corpus.n_families == len(kept)
    for split in ("test", "val"):
        fams = _families_of(out / f"{split}.fa")
        assert set(fams.values()) <= kept and min(map(len, fams)) >= 20
    assert stats["after_family_filter"]["test"] == len(list(read_fasta(out / "test.fa")))


def test_outputs_have_the_umask_mode(seed_out):
    out, _ = seed_out
    assert {path.name: path.stat().st_mode & 0o777 for path in out.iterdir()} == \
        {path.name: 0o666 & ~umask() for path in out.iterdir()}


def test_corpus_round_trip(seed_out, seed_corpus):
    out, _ = seed_out
    corpus = PfamCorpus(out)
    by_seq = {seq: parse_header(h)[2] for _, h, seq in read_fasta(seed_corpus)}
    held_out = set(_families_of(out / "test.fa")) | set(_families_of(out / "val.fa"))
    names = corpus.family_names
    decoded = []
    for i in range(len(corpus)):
        tokens = corpus.tokens(i)
        assert tokens.dtype == np.uint8 and len(tokens) == corpus.lengths[i]
        decoded.append(decode(tokens))
        assert by_seq[decoded[-1]] == names[corpus.family[i]]
    kept = set(names)
    expected = {s for s, f in by_seq.items() if f in kept and len(s) >= 20} - held_out
    assert set(decoded) == expected
    for f in range(corpus.n_families):
        members = corpus.members(f)
        assert len(members) == corpus.family_sizes[f] and (corpus.family[members] == f).all()
    assert np.array_equal(encode(decoded[0]), corpus.tokens(0))


def test_pairs_labels_and_membership(seed_out):
    out, _ = seed_out
    fams = _families_of(out / "test.fa")
    pairs = read_pairs(out / "test_pairs.tsv")
    assert len(pairs) == 200 and sum(y for _, _, y in pairs) == 100
    for a, b, y in pairs:
        assert a in fams and b in fams
        assert y == int(fams[a] == fams[b])
    assert all(a != b for a, b, y in pairs if y == 1)
    val = _families_of(out / "val.fa")
    val_pairs = read_pairs(out / "val_pairs.tsv")
    assert len(val_pairs) == 50 and all(a in val and b in val for a, b, _ in val_pairs)
    assert not set(val) & set(fams)


def test_max_len_variant(seed_corpus, tmp_path):
    stats = preprocess(seed_corpus, tmp_path / "tfm", seed=7, max_len=100, **SMALL)
    corpus = PfamCorpus(tmp_path / "tfm")
    assert corpus.lengths.max() <= 100 and stats["dropped_by_length"]["long"] > 0
    assert max(map(len, _families_of(tmp_path / "tfm" / "test.fa"))) <= 100


def test_reruns_are_byte_identical(seed_corpus, seed_out, tmp_path):
    out, stats = seed_out
    again = preprocess(seed_corpus, tmp_path / "again", seed=7, **SMALL)
    assert again["sha256"] == stats["sha256"]
    for name, digest in stats["sha256"].items():
        assert hashlib.sha256((tmp_path / "again" / name).read_bytes()).hexdigest() == digest
    assert (tmp_path / "again" / "stats.json").read_bytes().replace(b"again", b"") == \
        (out / "stats.json").read_bytes().replace(out.name.encode(), b"")
    other = preprocess(seed_corpus, tmp_path / "other", seed=8, **SMALL)
    assert other["sha256"]["test.fa"] != stats["sha256"]["test.fa"]


def test_empty_sequence_and_nonstandard_residues(tmp_path, caplog):
    path = tmp_path / "odd.fa.gz"
    _synthetic(path, 200, extra=">EMPTY/1-0 E1.1 PF00001.3;Fam1;\n>ODD/1-30 O1.1 PF00001.3;Fam1;\n"
                                "ACDEFGHIKLUOBZX*acdefghiklmnpq\n")
    with caplog.at_level(logging.WARNING, logger="plus.data.pfam"):
        stats = preprocess(path, tmp_path / "out", seed=1, min_len=1, min_family_size=1, n_test_pairs=10,
                           n_val_pairs=0)
    assert stats["dropped_by_length"]["empty"] == 1
    assert "odd.fa.gz: record 201: empty sequence, skipped" in caplog.text
    assert "record 202: residue '*' outside the alphabet" in caplog.text
    by_char = stats["nonstandard_residues"]["by_char"]
    assert {c: by_char[c] for c in "UOBZX*"} == dict.fromkeys("UOBZX*", 1) and by_char["a"] == 1
    assert encode("UOBZX*a").tolist() == [5, 12, 21, 21, 21, 21, 1]


def test_demo_corpus_enlarged_with_hmm_hits(tmp_path):
    out = tmp_path / "demo.fasta.gz"
    stats = build_demo_corpus(SEEDS, [DEEPLOC_TRAIN], out, evalue=1e-5, cpus=2)
    assert stats["seed_records"] == 426 and stats["hit_records"] > 50
    assert stats["hits_per_family"]["Pkinase"] > 10
    hits = [(h, s) for _, h, s in read_fasta(out) if h.split()[0].split("/")[0] == h.split()[1]]
    assert len(hits) == stats["hit_records"]
    for header, seq in hits:
        start, end = map(int, header.split()[0].split("/")[1].split("-"))
        assert len(seq) == end - start + 1
    regions: dict[str, list] = {}
    for header, _ in hits:
        target, span = header.split()[0].split("/")
        regions.setdefault(target, []).append(tuple(map(int, span.split("-"))))
    for spans in regions.values():
        spans.sort()
        assert all(a[1] < b[0] for a, b in zip(spans, spans[1:], strict=False))


def test_worker_processes_give_identical_outputs(tmp_path, monkeypatch):
    import plus.data.pfam as pfam

    _synthetic(tmp_path / "in.fa.gz", 3000)
    monkeypatch.setattr(pfam, "_BLOCK", 8192)  # many blocks, so the worker pool is used
    kwargs = dict(seed=5, min_len=30, min_family_size=40, n_test_pairs=20, n_val_pairs=0)
    one = preprocess(tmp_path / "in.fa.gz", tmp_path / "one", workers=1, **kwargs)
    two = preprocess(tmp_path / "in.fa.gz", tmp_path / "two", workers=2, **kwargs)
    assert one["sha256"] == two["sha256"] and one["input"]["records"] == 3000
    assert 0 < one["families_kept"] < 40 and one["dropped_by_length"]["short"] > 0


_REAL_PREADV = os.preadv


def _short_reads(fd, buffers, offset):
    return _REAL_PREADV(fd, [memoryview(buffers[0])[:1000]], offset)


@pytest.mark.parametrize("block", [None, 4096], ids=["default-buffer", "small-buffer"])
def test_pass_2_in_place_filter_gives_identical_outputs(tmp_path, monkeypatch, block):
    """Pass 2 moves kept records down over dropped ones inside each store; moves in many short pieces
    (reads that stop short, a buffer smaller than the gaps and runs) give the same bytes, and the work files
    are gone."""
    import plus.data.pfam as pfam

    _synthetic(tmp_path / "in.fa.gz", 3000)
    kwargs = dict(seed=5, min_len=30, min_family_size=40, n_test_pairs=20, n_val_pairs=0)
    direct = preprocess(tmp_path / "in.fa.gz", tmp_path / "direct", **kwargs)
    monkeypatch.setattr(pfam.os, "preadv", _short_reads)
    if block:  # and chunks of 3 records, some of them with no record kept
        monkeypatch.setattr(pfam, "_BLOCK", block)
        monkeypatch.setattr(pfam, "_RECORDS_PER_CHUNK", 3)
    other = preprocess(tmp_path / "in.fa.gz", tmp_path / "other", **kwargs)
    assert other["sha256"] == direct["sha256"] and 0 < direct["families_kept"] < 40
    for name, digest in direct["sha256"].items():
        assert hashlib.sha256((tmp_path / "other" / name).read_bytes()).hexdigest() == digest
    assert sorted(p.name for p in (tmp_path / "other").iterdir()) == sorted([*direct["sha256"], "stats.json"])


def test_plain_and_multimember_gzip_inputs_agree(tmp_path, inflater):
    _synthetic(tmp_path / "one.fa.gz", 600)
    text = gzip.decompress((tmp_path / "one.fa.gz").read_bytes())
    (tmp_path / "plain.fa").write_bytes(text)
    cut = text.index(b">", len(text) // 2)
    (tmp_path / "two.fa.gz").write_bytes(gzip.compress(text[:cut]) + gzip.compress(text[cut:]))
    kwargs = dict(seed=2, min_family_size=1, n_test_pairs=10, n_val_pairs=0)
    digests = [preprocess(tmp_path / name, tmp_path / f"out_{name}", **kwargs)["sha256"]
               for name in ("one.fa.gz", "plain.fa", "two.fa.gz")]
    assert digests[0] == digests[1] == digests[2]
