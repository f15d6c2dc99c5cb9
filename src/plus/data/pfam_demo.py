"""A small real Pfam-A.fasta-format corpus from the embedded Pfam seed alignments (plus optional HMM hits).

Seed rows become `>NAME/start-end ACC PFxxxxx.v;ID;` records (gaps '.'/'-' dropped, upper-cased; ACC from
`#=GS NAME AC`, else NAME without its range). With enlargement, a profile HMM per seed alignment
(pyhmmer `Builder.build_msa`) is searched against the given non-test FASTA files; each included domain
(i-Evalue <= evalue) becomes `>TARGET/env_from-env_to TARGET PFxxxxx.v;ID;`. Where domains of a target
overlap, only the best-scoring one is kept (ties: lower family accession). Output order: families in
seed-file order, each with its seed records then its hits sorted by (target, start).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

from plus.io import InputError, atomic_write, iter_lines, read_fasta

_EASEL_AMINO = set("ACDEFGHIKLMNPQRSTVWYBJZOUX")


@dataclass
class SeedAlignment:
    family_id: str
    accession: str
    path: Path
    rows: dict[str, str] = field(default_factory=dict)  # name -> aligned row, in file order
    seq_acc: dict[str, str] = field(default_factory=dict)

    def records(self) -> list[tuple[str, str]]:
        """(header, ungapped upper-case sequence) in Pfam-A.fasta format."""
        out = []
        for name, row in self.rows.items():
            acc = self.seq_acc.get(name, name.split("/")[0])
            seq = row.replace(".", "").replace("-", "").upper()
            out.append((f"{name} {acc} {self.accession};{self.family_id};", seq))
        return out


def read_stockholm(path: str | os.PathLike) -> list[SeedAlignment]:
    """Parse the alignments of a Stockholm file (interleaved blocks allowed)."""
    path = Path(path)
    alignments, current = [], None
    for n, line in iter_lines(path):
        if line.startswith("# STOCKHOLM"):
            current = SeedAlignment("", "", path)
        elif current is None:
            if line.strip():
                raise InputError(f"{path}: line {n}: not a Stockholm file (no '# STOCKHOLM' header)")
        elif line.startswith("//"):
            if not current.family_id or not current.accession:
                raise InputError(f"{path}: line {n}: alignment without '#=GF ID' and '#=GF AC'")
            alignments.append(current)
            current = None
        elif line.startswith("#=GF ID"):
            current.family_id = line.split()[2]
        elif line.startswith("#=GF AC"):
            current.accession = line.split()[2]
        elif line.startswith("#=GS") and len(line.split()) >= 4 and line.split()[2] == "AC":
            current.seq_acc[line.split()[1]] = line.split()[3]
        elif line.strip() and not line.startswith("#"):
            parts = line.split()
            if len(parts) != 2:
                raise InputError(f"{path}: line {n}: expected 'NAME ALIGNED_ROW', got {line[:60]!r}")
            current.rows[parts[0]] = current.rows.get(parts[0], "") + parts[1]
    if current is not None:
        raise InputError(f"{path}: alignment not terminated by '//'")
    return alignments


def _search(alignments: list[SeedAlignment], search_fastas: list[Path], evalue: float, cpus: int):
    """Best non-overlapping included domains per target: list of (alignment index, target, start, end)."""
    import pyhmmer
    from pyhmmer import easel, plan7

    alphabet = easel.Alphabet.amino()
    targets, seen, used = [], set(), set()
    for path in search_fastas:
        for _, header, seq in read_fasta(path):
            seq = "".join(c if c in _EASEL_AMINO else "X" for c in seq.upper())
            name = header.split()[0]
            if seq in seen or not seq:
                continue
            while name in used:
                name += "_"
            seen.add(seq)
            used.add(name)
            targets.append((name, seq))
    block = easel.DigitalSequenceBlock(alphabet, [
        easel.TextSequence(name=name.encode(), sequence=seq).digitize(alphabet) for name, seq in targets])
    builder, background = plan7.Builder(alphabet, seed=42), plan7.Background(alphabet)
    hmms = []
    for k, aln in enumerate(alignments):
        msa = easel.TextMSA(name=str(k).encode(), sequences=[
            easel.TextSequence(name=name.encode(), sequence=row.replace(".", "-").upper())
            for name, row in aln.rows.items()])
        hmm, _, _ = builder.build_msa(msa.digitize(alphabet), background)
        hmms.append(hmm)
    domains: dict[str, list] = {}
    for hits in pyhmmer.hmmsearch(hmms, block, cpus=cpus, E=evalue, domE=evalue, incE=evalue,
                                  incdomE=evalue):
        k = int(hits.query.name.decode() if isinstance(hits.query.name, bytes) else hits.query.name)
        for hit in hits:
            if not hit.included:
                continue
            target = hit.name.decode() if isinstance(hit.name, bytes) else hit.name
            for dom in hit.domains:
                if dom.included:
                    domains.setdefault(target, []).append((-dom.score, alignments[k].accession, k,
                                                           dom.env_from, dom.env_to))
    kept = []
    for target, doms in domains.items():
        chosen = []
        for _, _, k, start, end in sorted(doms):
            if all(end < a or start > b for a, b in chosen):
                chosen.append((start, end))
                kept.append((k, target, start, end))
    return kept, dict(targets)


def build_demo_corpus(seed_files: list[Path], search_fastas: list[Path], out: Path, evalue: float = 1e-5,
                      cpus: int = 2, enlarge: bool = True) -> dict:
    """Write the seed (and HMM-hit) records to `out` (.gz: byte-identical reruns); return counts."""
    alignments = [a for path in seed_files for a in read_stockholm(path)]
    hits, sequences = (_search(alignments, [Path(p) for p in search_fastas], evalue, cpus)
                       if enlarge and search_fastas else ([], {}))
    per_family: dict[int, list] = {}
    for k, target, start, end in sorted(hits):
        per_family.setdefault(k, []).append((target, start, end))
    n_seed = n_hit = 0
    with atomic_write(out) as fh:
        for k, aln in enumerate(alignments):
            for header, seq in aln.records():
                fh.write(f">{header}\n{seq}\n")
                n_seed += 1
            for target, start, end in per_family.get(k, []):
                fh.write(f">{target}/{start}-{end} {target} {aln.accession};{aln.family_id};\n"
                         f"{sequences[target][start - 1 : end]}\n")
                n_hit += 1
    return {"records": n_seed + n_hit, "seed_records": n_seed, "hit_records": n_hit,
            "families": len(alignments),
            "hits_per_family": {alignments[k].family_id: len(v) for k, v in sorted(per_family.items())}}
