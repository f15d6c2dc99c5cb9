"""Rebuild train.csv.gz and test.csv.gz of this example from the embedded DeepLoc files (run from the repo root).

DeepLoc 1.0 headers read `>ACCESSION Location-M|S|U [test]`: M = membrane-bound, S = soluble, U = unknown.
Records with M or S become `membrane` / `soluble`; U records are left out. Train: the embedded DeepLoc training
subset (deeploc_our_val_set); test: the embedded DeepLoc test partition. gzip without a timestamp (-n).
"""

import csv
import gzip
import io
from pathlib import Path

SRC, OUT = Path("data/embedded/localization"), Path("data/examples/membrane")
LABELS = {"M": "membrane", "S": "soluble"}


def records(path):
    ident, label, seq = None, None, []
    with gzip.open(path, "rt") as fh:
        for line in [*fh, ">"]:
            if line.startswith(">"):
                if ident and label:
                    yield ident, "".join(seq), label
                fields = line[1:].split()
                ident = fields[0] if fields else None
                label = LABELS.get(fields[1].rsplit("-", 1)[-1]) if len(fields) > 1 else None
                seq = []
            else:
                seq.append(line.strip())


for name, src in (("train", "deeploc_our_val_set.fasta.gz"), ("test", "deeploc_test_set.fasta.gz")):
    text = io.StringIO()
    writer = csv.writer(text, lineterminator="\n")
    writer.writerow(["id", "sequence", "label"])
    writer.writerows(records(SRC / src))
    with open(OUT / f"{name}.csv.gz", "wb") as raw, gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz:
        gz.write(text.getvalue().encode())
