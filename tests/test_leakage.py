"""Leakage audit (plus.data.leakage): phmmer of real test sequences against a real Pfam seed corpus."""

import csv
import random
from pathlib import Path

import numpy as np
import pytest

from plus.alphabet import decode
from plus.cli import main
from plus.data import convert as C
from plus.data.leakage import COLUMNS, DETAIL_COLUMNS, Corpus, audit, subsample
from plus.data.pfam import preprocess
from plus.data.pfam_demo import build_demo_corpus
from plus.data.tasks import write_task
from plus.io import InputError

EMB = Path(__file__).resolve().parents[1] / "data" / "embedded"
SEEDS = sorted((EMB / "pfam").glob("pyhmmer-0.12.3/*.sto")) + sorted((EMB / "pfam").glob("biopython-1.88/*.seed.txt"))


@pytest.fixture(scope="module")
def corpus(tmp_path_factory):
    root = tmp_path_factory.mktemp("corpus")
    build_demo_corpus(SEEDS, [], root / "seeds.fasta.gz", enlarge=False)
    preprocess(root / "seeds.fasta.gz", root / "rnn", seed=7, min_family_size=10, n_test_pairs=20,
               n_val_pairs=20, val_fraction=0.1)
    return root / "rnn"


@pytest.fixture(scope="module")
def probes(corpus):
    """Corpus member, its shuffle and a 20 %-substituted copy (real Pfam residues)."""
    c = Corpus(corpus)
    member = decode(c.tokens[c.offsets[0] : c.offsets[1]])
    rng = random.Random(0)
    shuffled = "".join(rng.sample(member, len(member)))
    mutant = list(member)
    for i in rng.sample(range(len(member)), len(member) // 5):
        mutant[i] = "W" if mutant[i] != "W" else "A"
    return {"member": member, "shuffled": shuffled, "mutant": "".join(mutant)}


@pytest.fixture(scope="module")
def tasks(probes, tmp_path_factory):
    """A protein-kind probe task plus the real embedded secstr and homology (pairs) test sets."""
    root = tmp_path_factory.mktemp("tasks")
    fasta = "".join(f">{k} 1\n{s}\n" for k, s in probes.items())
    manifest = {"task": "solubility", "kind": "protein", "labels": ["insoluble", "soluble"],
                "splits": {"train": "train.fa", "dev": "dev.fa", "test": {"probe": "test_probe.fa"}}}
    write_task(root / "probe", manifest, {"train.fa": [fasta], "dev.fa": [fasta], "test_probe.fa": [fasta]})
    C.convert_task("secstr", "embedded", C.embedded_raw("secstr", EMB), root / "secstr", 0, max_train=20)
    C.convert_task("homology", "embedded", C.embedded_raw("homology", EMB), root / "homology", 0, max_train=20,
                   n_pairs_dev=10, n_pairs_test=20)
    return root


def _run(corpus, dirs, out, **kw):
    """Audit; returns the table rows and the probe task's detail rows by test id."""
    rows = audit(corpus, dirs, out / "leakage.csv", out / "leakage.md", out / "detail", out_html=out / "leakage.html",
                 **kw)
    probe = out / "detail" / "solubility.tsv"
    return rows, {r["test_id"]: r for r in _tsv(probe)} if probe.exists() else {}


def _tsv(path):
    with open(path) as fh:
        return list(csv.DictReader(fh, delimiter="\t"))


def test_member_found_with_identity_one_shuffle_not(corpus, tasks, tmp_path, probes):
    rows, detail = _run(corpus, [tasks / "probe"], tmp_path, evalue_max=1e-10, min_identity=0.5)
    assert detail["member"]["leak"] == "1" and float(detail["member"]["identity"]) == 1.0
    assert float(detail["member"]["coverage"]) > 0.95 and float(detail["member"]["evalue"]) < 1e-30
    c = Corpus(corpus)
    target = int(detail["member"]["target"])
    assert decode(c.tokens[c.offsets[target] : c.offsets[target + 1]]) == probes["member"]
    assert detail["member"]["family"] == c.names[c.family[target]]
    assert detail["shuffled"]["leak"] == "0" and detail["shuffled"]["target"] == ""
    assert detail["mutant"]["leak"] == "1" and 0.6 < float(detail["mutant"]["identity"]) < 0.95
    assert rows == [dict(task="solubility", test_set="probe", n_set=3, n_test=3, n_with_hit=2, fraction=2 / 3,
                         evalue_max=1e-10, min_identity=0.5, corpus="rnn", corpus_sequences=len(c))]


def test_thresholds_filter(corpus, tasks, tmp_path):
    rows, detail = _run(corpus, [tasks / "probe"], tmp_path / "a", min_identity=0.96)
    assert rows[0]["n_with_hit"] == 1 and detail["mutant"]["leak"] == "0" and detail["mutant"]["target"]
    rows, detail = _run(corpus, [tasks / "probe"], tmp_path / "b", evalue_max=1e-300)
    assert rows[0]["n_with_hit"] == 0 and all(d["target"] == "" for d in detail.values())


def test_csv_markdown_and_pair_sets(corpus, tasks, tmp_path):
    rows, _ = _run(corpus, [tasks / "secstr", tasks / "homology"], tmp_path, max_test=4, corpus_name="rnn")
    with open(tmp_path / "leakage.csv") as fh:
        table = list(csv.DictReader(fh))
    assert tuple(table[0]) == COLUMNS
    assert [(r["task"], r["test_set"]) for r in table] == [("secstr", "cb513"), ("secstr", "ts115"),
                                                            ("secstr", "casp12"), ("homology", "id40"),
                                                            ("homology", "id25")]
    assert all(r["n_test"] == "4" and int(r["n_set"]) >= 4 for r in table)
    pairs = [line.split("\t") for line in (tasks / "homology" / "test_id25_pairs.tsv").read_text().splitlines()[1:]]
    assert table[4]["n_set"] == str(len({p[0] for p in pairs} | {p[1] for p in pairs}))
    detail = _tsv(tmp_path / "detail" / "homology.tsv")
    assert tuple(detail[0]) == DETAIL_COLUMNS and len(detail) == 8
    assert sum(int(d["leak"]) for d in detail) == int(table[3]["n_with_hit"]) + int(table[4]["n_with_hit"])
    md = (tmp_path / "leakage.md").read_text()
    assert "| homology | id25 | 4 / " in md and "identity >= 0.5" in md
    page = (tmp_path / "leakage.html").read_text()
    assert page.count("<tr>") == 6 and "<td>homology</td><td>id25</td><td>4 / " in page


def test_deterministic_across_chunks_and_threads(corpus, tasks, tmp_path):
    _run(corpus, [tasks / "probe", tasks / "secstr"], tmp_path / "a", max_test=3, cpus=1)
    _run(corpus, [tasks / "probe", tasks / "secstr"], tmp_path / "b", max_test=3, cpus=2, chunk=37)
    for name in ("leakage.csv", "leakage.md", "detail/solubility.tsv", "detail/secstr.tsv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "b" / name).read_bytes(), name


def test_subsample_is_order_independent():
    records = [(f"id{i}", "ACDE") for i in range(50)]
    assert subsample(records, 10) == subsample(records[::-1], 10) and len(subsample(records, 10)) == 10
    assert subsample(records, None) == records and subsample(records, 80) == records


def test_bad_inputs_name_the_file_and_write_nothing(corpus, tasks, tmp_path, capsys):
    bad = tmp_path / "bad"
    bad.mkdir()
    for name in ("stats.json", "train_tokens.npy", "train_family.npy", "families.tsv"):
        (bad / name).write_bytes((corpus / name).read_bytes())
    out = tmp_path / "out"
    with pytest.raises(InputError, match="train_offsets.npy"):
        _run(bad, [tasks / "probe"], out)
    np.save(bad / "train_offsets.npy", np.load(corpus / "train_offsets.npy")[:-1])
    with pytest.raises(InputError, match=r"train_offsets\.npy: offsets"):
        _run(bad, [tasks / "probe"], out)
    with pytest.raises(InputError, match=r"nowhere/manifest\.json: file not found"):
        _run(corpus, [tasks / "probe", tmp_path / "nowhere"], out)
    broken = tmp_path / "broken"
    broken.mkdir()
    for p in (tasks / "probe").iterdir():
        (broken / p.name).write_text(p.read_text())
    (broken / "test_probe.fa").write_text(">member 1\nMKV\n>member 0\nMKV\n")
    with pytest.raises(InputError, match=r"test_probe\.fa: record 2 \(member\): duplicate"):
        _run(corpus, [broken], out)
    assert not out.exists()
    args = ["leakage", "--corpus", str(bad), "--tasks", str(tasks / "probe"), "--out-csv", str(out / "l.csv"),
            "--out-md", str(out / "l.md"), "--detail-dir", str(out / "d")]
    assert main(args) == 2 and "train_offsets.npy" in capsys.readouterr().err
    assert not out.exists()
