"""Leakage audit: how many test sequences of each task have a close homolog in the pre-training corpus.

Every distinct test sequence (pair test sets: every distinct domain of the pairs) is a pyhmmer ``phmmer``
query against the corpus's training split (the sequences the model was trained on). A test sequence
*leaks* when some corpus sequence is hit with

* full-sequence E-value <= ``evalue_max``, computed for the whole corpus (Z = number of corpus sequences),
  so E-values do not depend on how the corpus is chunked; and
* identity >= ``min_identity``, where identity = identical residues / alignment columns of the hit's best
  domain (the highest-scoring local alignment of query and target; columns include gaps on either side,
  an X never counts as identical). Query coverage = query residues in that alignment / query length.

Per test sequence the reported hit is the significant one (E <= ``evalue_max``) of highest identity
(ties: lower E-value, then lower corpus index). The corpus is searched in chunks of ``chunk`` sequences
(one ``DigitalSequenceBlock`` each, about 0.7 kB + 1 byte per residue per sequence), so memory is bounded
by the chunk, not the corpus; queries are re-built per chunk (their HMMs are deterministic).
"""

from __future__ import annotations

import os
import zlib
from pathlib import Path

import numpy as np

from plus.alphabet import RESIDUES, decode, encode
from plus.data.tasks import load_task
from plus.html_table import html_page
from plus.io import InputError, atomic_write, read_json

COLUMNS = ("task", "test_set", "n_set", "n_test", "n_with_hit", "fraction", "evalue_max", "min_identity",
           "corpus", "corpus_sequences")
DETAIL_COLUMNS = ("test_set", "test_id", "length", "leak", "target", "family", "evalue", "identity",
                  "coverage")
# our token id (1..20 = ARNDCQEGHILKMFPSTWYV, 21 = X) -> Easel amino digital code (ACDEFGHIKLMNPQRSTVWY..X)
_EASEL_SYMBOLS = "ACDEFGHIKLMNPQRSTVWY-BJZOUX*~"
_TO_EASEL = np.full(256, 255, np.uint8)
for _i, _c in enumerate(RESIDUES + "X", 1):
    _TO_EASEL[_i] = _EASEL_SYMBOLS.index(_c)


class Corpus:
    """Training split of a preprocessed Pfam corpus (``plus pfam preprocess`` output), memory-mapped."""

    def __init__(self, directory: str | os.PathLike):
        self.root = Path(directory)
        stats = read_json(self.root / "stats.json")
        try:
            self.tokens = np.load(self.root / "train_tokens.npy", mmap_mode="r")
            self.offsets = np.load(self.root / "train_offsets.npy")
            self.family = np.load(self.root / "train_family.npy")
        except FileNotFoundError as exc:
            raise InputError(f"{exc.filename}: file not found (not a preprocessed Pfam corpus)") from None
        except (ValueError, OSError) as exc:
            raise InputError(f"{self.root}: unreadable corpus shard ({exc})") from None
        n = len(self.family)
        expected = stats.get("after_family_filter", {}).get("train")
        if expected != n:
            raise InputError(f"{self.root / 'stats.json'}: after_family_filter.train = {expected!r}, "
                             f"but train_family.npy holds {n} sequences")
        if len(self.offsets) != n + 1 or self.offsets[0] != 0 or self.offsets[-1] != len(self.tokens) \
                or (np.diff(self.offsets) <= 0).any():
            raise InputError(f"{self.root / 'train_offsets.npy'}: offsets do not delimit {n} non-empty "
                             f"sequences in train_tokens.npy ({len(self.tokens)} tokens)")
        self.names = _family_names(self.root / "families.tsv")
        if n and self.family.max() >= len(self.names):
            raise InputError(f"{self.root / 'train_family.npy'}: family index {int(self.family.max())} "
                             f"outside families.tsv ({len(self.names)} families)")

    def __len__(self) -> int:
        return len(self.family)

    def blocks(self, chunk: int):
        """Yield (first index, DigitalSequenceBlock) of consecutive chunks of `chunk` sequences."""
        import pyhmmer

        alphabet = pyhmmer.easel.Alphabet.amino()
        for start in range(0, len(self), chunk):
            stop = min(start + chunk, len(self))
            a, b = int(self.offsets[start]), int(self.offsets[stop])
            codes = _TO_EASEL[np.asarray(self.tokens[a:b])]
            if (codes == 255).any():
                bad = a + int(np.flatnonzero(codes == 255)[0])
                seq = int(np.searchsorted(self.offsets, bad, side="right")) - 1
                raise InputError(f"{self.root / 'train_tokens.npy'}: sequence {seq}: token "
                                 f"{int(self.tokens[bad])} outside 1..21")
            ends = (self.offsets[start + 1 : stop + 1] - a).tolist()
            begins = (self.offsets[start:stop] - a).tolist()
            seqs = [pyhmmer.easel.DigitalSequence(alphabet, name=str(start + k).encode(), sequence=codes[i:j])
                    for k, (i, j) in enumerate(zip(begins, ends, strict=True))]
            yield start, pyhmmer.easel.DigitalSequenceBlock(alphabet, seqs)


def _family_names(path: Path) -> list[str]:
    """'ACCESSION FAMILY' per family index of families.tsv (header line first)."""
    try:
        lines = path.read_text().splitlines()[1:]
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    rows = []
    for line_no, line in enumerate(lines, 2):
        fields = line.split("\t")
        if len(fields) < 3:
            raise InputError(f"{path}: line {line_no}: expected index, accession, family columns")
        rows.append(f"{fields[1]} {fields[2]}")
    return rows


def test_sequences(task_dir: str | os.PathLike) -> tuple[str, dict[str, list[tuple[str, str]]]]:
    """(task, {test set: [(id, sequence)]}) of a converted task directory; pair sets give distinct domains."""
    data = load_task(task_dir)
    sets = {}
    for name, filename in data.tests.items():
        records = data.read(filename)
        if data.manifest["kind"] == "pair":
            seqs: dict[str, str] = {}
            for id_a, id_b, seq_a, seq_b, _ in records:
                for ident, seq in ((id_a, seq_a), (id_b, seq_b)):
                    if seqs.setdefault(ident, seq) != seq:
                        raise InputError(f"{data.root / filename}: domain {ident} appears with two "
                                         "different sequences")
            sets[name] = list(seqs.items())
        else:
            sets[name] = [(r[0], r[1]) for r in records]
    return str(data.manifest["task"]), sets


def subsample(records: list[tuple[str, str]], max_test: int | None) -> list[tuple[str, str]]:
    """The `max_test` records of smallest crc32(id) (deterministic, independent of file order), or all."""
    if not max_test or len(records) <= max_test:
        return records
    return sorted(records, key=lambda r: (zlib.crc32(r[0].encode()), r[0]))[:max_test]


def alignment_identity(query: str, alignment) -> tuple[float, int]:
    """(identical residues / alignment columns, query residues aligned) of a phmmer domain alignment.

    Match columns carry query residue ``hmm_from + k`` (a phmmer model has one match state per query
    residue); '.' in the model line is a target insertion, '-' in the target line a deletion.
    """
    pos, same = alignment.hmm_from - 1, 0
    model, target = alignment.hmm_sequence, alignment.target_sequence
    for m, t in zip(model, target, strict=True):
        if m == ".":
            continue
        if t != "-" and t.upper() == query[pos] != "X":
            same += 1
        pos += 1
    return same / len(model), pos - (alignment.hmm_from - 1)


def search(queries: list[str], corpus: Corpus, evalue_max: float, cpus: int = 2,
           chunk: int = 1_000_000) -> list[tuple | None]:
    """Best significant corpus hit per query, (-identity, evalue, target, coverage) or None (see module)."""
    import pyhmmer

    alphabet = pyhmmer.easel.Alphabet.amino()
    digital = [pyhmmer.easel.TextSequence(name=str(i).encode(), sequence=q).digitize(alphabet)
               for i, q in enumerate(queries)]
    best: list[tuple | None] = [None] * len(queries)
    if not queries:
        return best
    for _, block in corpus.blocks(chunk):
        tops = pyhmmer.hmmer.phmmer(digital, block, cpus=cpus, Z=len(corpus), E=evalue_max)
        for q, top in enumerate(tops):
            for hit in top:
                if hit.evalue > evalue_max:
                    continue
                identity, covered = alignment_identity(queries[q], hit.best_domain.alignment)
                name = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
                cand = (-identity, float(hit.evalue), int(name), covered / len(queries[q]))
                if best[q] is None or cand < best[q]:
                    best[q] = cand
    return best


def audit(corpus_dir, task_dirs, out_csv, out_md, detail_dir, evalue_max: float = 1e-10,
          min_identity: float = 0.5, corpus_name: str = "", max_test: int | None = None, cpus: int = 2,
          chunk: int = 1_000_000, out_html=None) -> list[dict]:
    """Search every test set of `task_dirs` against the corpus; write the table (CSV, Markdown, HTML) and one
    per-sequence TSV per task into `detail_dir`. Inputs are all read before anything is written."""
    corpus = Corpus(corpus_dir)
    tasks = [test_sequences(d) for d in task_dirs]
    audited = [(task, name, len(recs), [(i, decode(encode(s))) for i, s in subsample(recs, max_test)])
               for task, sets in tasks for name, recs in sets.items()]  # residues in the reference alphabet
    index: dict[str, int] = {}  # distinct sequence -> query number
    for *_, recs in audited:
        for _, seq in recs:
            index.setdefault(seq, len(index))
    best = search(list(index), corpus, evalue_max, cpus, chunk)
    rows, details = [], {}
    for task, name, n_set, recs in audited:
        lines, n_hit = details.setdefault(task, []), 0
        for ident, seq in recs:
            hit = best[index[seq]]
            leak = hit is not None and -hit[0] >= min_identity
            n_hit += leak
            cells = ["", "", "", "", ""] if hit is None else [
                str(hit[2]), corpus.names[corpus.family[hit[2]]], f"{hit[1]:.3g}", f"{-hit[0]:.4f}",
                f"{hit[3]:.4f}"]
            lines.append("\t".join([name, ident, str(len(seq)), str(int(leak)), *cells]) + "\n")
        rows.append(dict(task=task, test_set=name, n_set=n_set, n_test=len(recs), n_with_hit=n_hit,
                         fraction=n_hit / len(recs), evalue_max=evalue_max, min_identity=min_identity,
                         corpus=corpus_name or corpus.root.name, corpus_sequences=len(corpus)))
    for task, lines in details.items():
        with atomic_write(Path(detail_dir) / f"{task}.tsv") as fh:
            fh.write("\t".join(DETAIL_COLUMNS) + "\n")
            fh.writelines(lines)
    with atomic_write(out_csv) as fh:
        fh.write(",".join(COLUMNS) + "\n")
        fh.writelines(",".join(_csv(r[c]) for c in COLUMNS) + "\n" for r in rows)
    with atomic_write(out_md) as fh:
        fh.write(to_markdown(rows))
    if out_html:
        with atomic_write(out_html) as fh:
            fh.write(to_html(rows))
    return rows


def _csv(value) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)


def to_markdown(rows: list[dict]) -> str:
    """The audit table as Markdown, thresholds and corpus in the heading."""
    head = rows[0] if rows else {}
    lines = [
        "## Leakage audit",
        "",
        f"Test sequences with a close homolog in the pre-training corpus `{head.get('corpus', '')}` "
        f"({head.get('corpus_sequences', 0)} sequences): phmmer E-value <= {head.get('evalue_max', '')} "
        f"and identity >= {head.get('min_identity', '')}.",
        "",
        "| Task | Test set | Audited / in set | With close homolog | Fraction |",
        "|---|---|---|---|---|",
    ]
    lines += [f"| {r['task']} | {r['test_set']} | {r['n_test']} / {r['n_set']} | {r['n_with_hit']} | "
              f"{r['fraction']:.3f} |" for r in rows]
    return "\n".join(lines) + "\n"


def _summary_line(rows: list[dict]) -> str:
    head = rows[0] if rows else {}
    return (f"Test sequences with a close homolog in the pre-training corpus {head.get('corpus', '')!r} "
            f"({head.get('corpus_sequences', 0)} sequences): phmmer E-value <= {head.get('evalue_max', '')} "
            f"and identity >= {head.get('min_identity', '')}.")


def to_html(rows: list[dict]) -> str:
    """The audit table as an HTML page for the Snakemake report."""
    header = ["Task", "Test set", "Audited / in set", "With close homolog", "Fraction"]
    cells = [[r["task"], r["test_set"], f"{r['n_test']} / {r['n_set']}", str(r["n_with_hit"]),
              f"{r['fraction']:.3f}"] for r in rows]
    return html_page("Leakage audit", header, cells, _summary_line(rows))


def add_parser(subparsers) -> None:
    p = subparsers.add_parser("leakage", help="test sequences with a close homolog in the pre-training corpus")
    p.add_argument("--corpus", required=True, help="directory written by `plus pfam preprocess`")
    p.add_argument("--corpus-name", default="", help="corpus variant recorded in the table (default: dir name)")
    p.add_argument("--tasks", nargs="+", required=True, help="converted task directories (manifest.json)")
    p.add_argument("--evalue", type=float, default=1e-10, help="maximum full-sequence E-value")
    p.add_argument("--min-identity", type=float, default=0.5, help="minimum identity of the best domain")
    p.add_argument("--max-test", type=int, default=None, help="audit at most this many sequences per test set")
    p.add_argument("--cpus", type=int, default=2)
    p.add_argument("--chunk", type=int, default=1_000_000, help="corpus sequences per search block (memory)")
    p.add_argument("--out-csv", required=True)
    p.add_argument("--out-md", required=True)
    p.add_argument("--out-html", help="also an HTML page (shown inline by the Snakemake report)")
    p.add_argument("--detail-dir", required=True, help="per-task, per-sequence TSVs go here")
    p.set_defaults(func=run)


def run(a) -> None:
    rows = audit(a.corpus, a.tasks, a.out_csv, a.out_md, a.detail_dir, a.evalue, a.min_identity,
                 a.corpus_name, a.max_test, a.cpus, a.chunk, a.out_html)
    for r in rows:
        print(f"{r['task']}/{r['test_set']}: {r['n_with_hit']}/{r['n_test']} test sequences with a close homolog")
