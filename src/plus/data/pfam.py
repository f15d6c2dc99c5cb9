"""Pfam pre-training corpus: a streaming Pfam-A.fasta preprocessor (its reader: plus.data.pfam_corpus).

`preprocess` turns `Pfam-A.fasta.gz` (records `>NAME/start-end ACC.v PFxxxxx.v;FamilyID;`) into the
training shards and the held-out sets of the paper (spec §2.1), in one decompression pass and in memory
bounded by the number of families:

* Family = 2nd ';' field of the 3rd header token (as the reference); its accession is the 1st field.
* Split: u = splitmix64(crc32(NAME) ^ splitmix64(seed)) / 2^64 is a keyed, order-independent uniform
  number per record name. u < test_fraction -> test; the next (1 - test_fraction) * val_fraction -> val
  (held out of the paper's training split for model selection); the rest -> train.
* Length filter: drop sequences shorter than min_len (and longer than max_len when given, the PLUS-TFM
  variant), as the reference does before counting families. Empty sequences are always dropped, with a
  warning naming the file and record.
* Family filter: a family is kept when it has >= min_family_size sequences in the paper's training split
  (train + val) after the length filter; dropped families are removed from every split (val, test too).
* Residues are upper-cased and encoded with the reference alphabet (O->K, U->C, B/Z/other->X = 21);
  every byte outside ARNDCQEGHILKMFPSTWYV is counted in stats.json.
* Pass 1 streams the decompressed text (plus.data.fasta_blocks: ISA-L's inflate, else zlib's, in a
  thread) in 8 MB blocks of complete records; each block is parsed with a few whole-block regex/bytes/numpy
  operations, in `workers` processes once there is more than one block, and merged in input order into
  per-split stores (train as tokens, val/test as FASTA text), so memory is bounded. Pass 2 applies the
  family filter to each store in place, in bounded chunks: kept records move down over dropped ones and the
  store's payload file becomes the output. Everything is written into a temporary directory renamed into
  place at the end; nothing partial is left behind.

Outputs: train_tokens.npy (uint8, concatenated), train_offsets.npy (int64, n+1), train_family.npy (int32),
families.tsv, val.fa, test.fa, val_pairs.tsv, test_pairs.tsv, stats.json.
"""

from __future__ import annotations

import collections
import functools
import gc
import hashlib
import io
import logging
import multiprocessing
import os
import re
import shutil
import zlib
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from pathlib import Path

import numpy as np

from plus.alphabet import encode
from plus.data.fasta_blocks import fasta_blocks
from plus.data.pfam_corpus import PAIR_COLUMNS
from plus.io import InputError, write_json

log = logging.getLogger(__name__)

SPLITS = ("train", "val", "test")
_HEADER_RE = re.compile(rb">((\S+)[ \t]+\S+[ \t]+(\S+)[^\n]*)\n")
_TOKENS = encode(bytes(range(256))).tobytes()  # byte -> token id, lower case folded as the reference
_STANDARD = b"ACDEFGHIKLMNPQRSTVWY"
_NONSTD = bytes(0 if c in _STANDARD or c == ord(">") else c for c in range(256))
_ALIEN = bytes(0 if chr(c).upper() in "ARNDCQEGHILKMFPSTWYVXOUBZ>" else 1 for c in range(256))
_BLOCK = 8 << 20
_CHUNK = 1 << 20
_RECORDS_PER_CHUNK = 1 << 18  # pass 2 filters the stores this many records at a time
_MASK64 = (1 << 64) - 1
_NPY_HEADER = 128  # bytes of a 1-D .npy header (format 1.0, padded to 64-byte alignment)
_WARN_LIMIT = 10


def parse_header(header: str | bytes) -> tuple[str, str, str]:
    """(name, family accession, family ID) of a Pfam-A.fasta header `NAME/start-end ACC.v PFxxxxx.v;ID;`."""
    text = header.decode("ascii", "replace") if isinstance(header, bytes) else header
    fields = text.lstrip(">").split()
    parts = fields[2].split(";") if len(fields) >= 3 else []
    if len(parts) < 2 or not parts[1]:
        raise ValueError(f"malformed Pfam header {text[:80]!r} (expected 'NAME/start-end ACC PFxxxxx.v;ID;')")
    return fields[0], parts[0], parts[1]


def split_uniform(names: list[bytes], seed: int) -> np.ndarray:
    """Keyed uniform [0, 1) per record name: splitmix64(crc32(name) ^ splitmix64(seed)) / 2^64."""
    key = _splitmix64(np.array([seed & _MASK64], dtype=np.uint64))[0]
    crc = np.fromiter(map(zlib.crc32, names), dtype=np.uint64, count=len(names))
    return (_splitmix64(crc ^ key) >> np.uint64(11)).astype(np.float64) * 2.0**-53


def _splitmix64(x: np.ndarray) -> np.ndarray:
    x = x + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


class _Families(dict):
    """3rd header token -> family index in order of first appearance; validates each new token once."""

    def __init__(self):
        super().__init__()
        self.acc, self.ids = [], []

    def __missing__(self, token: bytes) -> int:
        parts = token.split(b";")
        if len(parts) < 2 or not parts[1]:
            raise _BadToken(token)
        self[token] = index = len(self.acc)
        self.acc.append(parts[0].decode("ascii", "replace"))
        self.ids.append(parts[1].decode("ascii", "replace"))
        return index


class _BadToken(Exception):
    pass


class _Store:
    """Append-only temporary per-split store, read back in chunks: the payload bytes go where the split's
    output file will be (after `prefix` reserved bytes), the int arrays into the work directory."""

    def __init__(self, data: Path, work: Path, name: str, prefix: int = 0):
        self.paths = {"data": data, **{k: work / f"{name}.{k}" for k in ("len", "fam", "size")}}
        self.files = {k: open(p, "wb") for k, p in self.paths.items()}
        self.files["data"].write(bytes(prefix))
        self.prefix, self.n = prefix, 0

    def append(self, data: bytes, lengths: np.ndarray, family: np.ndarray, sizes: np.ndarray) -> None:
        self.files["data"].write(data)
        self.files["len"].write(lengths.astype(np.int32).tobytes())
        self.files["fam"].write(family.astype(np.int32).tobytes())
        self.files["size"].write(sizes.astype(np.int64).tobytes())
        self.n += len(lengths)

    def close(self) -> None:
        for fh in self.files.values():
            fh.close()

    def filter(self, new_index: np.ndarray):
        """Keep the records whose family has a new index (>= 0): their payload moves down in place, so the
        data file becomes the output, truncated after the last kept byte (no second copy of the corpus).
        Yields (lengths, payload sizes, new family) of the kept records, chunk by chunk."""
        position, offset, buf = self.prefix, self.prefix, bytearray(_BLOCK)
        with open(self.paths["data"], "r+b") as fh:
            for start in range(0, self.n, _RECORDS_PER_CHUNK):
                count = min(_RECORDS_PER_CHUNK, self.n - start)
                lengths, family, sizes = (np.fromfile(self.paths[k], dtype, count, offset=dtype().itemsize * start)
                                          for k, dtype in (("len", np.int32), ("fam", np.int32), ("size", np.int64)))
                mapped = new_index[family]
                keep = mapped >= 0
                starts = offset + np.concatenate(([0], np.cumsum(sizes)))
                for a, b in _runs(keep).tolist():
                    position = _move_down(fh.fileno(), int(starts[a]), int(starts[b] - starts[a]), position, buf)
                offset = int(starts[-1])
                yield lengths[keep], sizes[keep], mapped[keep]
            fh.truncate(position)

    def remove(self) -> None:
        for k in ("len", "fam", "size"):
            self.paths[k].unlink(missing_ok=True)


def _move_down(fd: int, source: int, count: int, position: int, buf: bytearray) -> int:
    """Move `count` bytes of file `fd` from `source` down to `position` (<= source) in pieces of len(buf), each
    read before it is written: overlapping ranges are safe. Returns the position after them."""
    if source == position:
        return position + count
    view = memoryview(buf)
    while count > 0:
        got = os.preadv(fd, [view[: min(count, len(buf))]], source)
        if got <= 0:
            raise RuntimeError(f"moving {count} bytes at {source}: the temporary store ended early")
        os.pwrite(fd, view[:got], position)
        source, position, count = source + got, position + got, count - got
    return position


class _BlockError(Exception):
    """Bad record inside a block: (0-based index in the block, message)."""


def _parse_block(buf: bytes, end: int, seed: int, cut_test: float, cut_val: float, min_len: int,
                 max_len: int | None) -> dict:
    """Parse the complete records in buf[:end]: families, lengths, split, filters, per-split payloads.

    Pure function (runs in worker processes); the caller merges results in input order.
    """
    records = _HEADER_RE.findall(buf, 0, end)
    headers, names, tokens = zip(*records, strict=True) if records else ((),) * 3
    n = len(records)
    # a match starts at a '>' and holds at least one: as many '>' as matches, each starting a line, means
    # match k is the header line at the k-th '>'; anything else is a record the regex skipped
    text = np.frombuffer(buf, np.uint8, end)
    marks = np.flatnonzero(text == ord(">"))
    if len(marks) != n or (n and (marks[0] or (text[marks[1:] - 1] != ord("\n")).any())):
        _raise_bad_header(buf[:end])
    seq_start = marks + np.fromiter(map(len, headers), np.int64, n) + 2
    seq_end = np.append(marks[1:], end)
    joined = b">".join([buf[a:b] for a, b in zip(seq_start.tolist(), seq_end.tolist(), strict=True)])
    local = _Families()
    try:
        codes = np.fromiter(map(local.__getitem__, tokens), np.int32, n)
    except _BadToken as exc:
        k = tokens.index(exc.args[0])
        raise _BlockError(k, f"malformed Pfam header {headers[k][:80].decode('ascii', 'replace')!r} "
                             "(expected 'NAME/start-end ACC PFxxxxx.v;ID;')") from None
    for space in (b"\n", b"\r", b" ", b"\t"):
        if space in joined:
            joined = joined.replace(space, b"")
    ends = np.append(np.flatnonzero(np.frombuffer(joined, np.uint8) == ord(">")), len(joined))
    lengths = np.diff(ends, prepend=-1) - 1
    starts = ends - lengths
    u = split_uniform(names, seed)
    split = np.where(u < cut_test, 2, np.where(u < cut_val, 1, 0)).astype(np.int8)
    empty = lengths == 0
    short = (lengths < min_len) & ~empty
    long = lengths > max_len if max_len else np.zeros(n, bool)
    keep = ~(empty | short | long)
    out = dict(n=n, end=end, keys=list(local), codes=codes, lengths=lengths, split=split, keep=keep,
               dropped={"empty": int(empty.sum()), "short": int(short.sum()), "long": int(long.sum())},
               empty=np.flatnonzero(empty)[:_WARN_LIMIT], nonstd=None, alien=None, data={}, sizes={})
    flags = np.frombuffer(joined.translate(_NONSTD), np.uint8)
    if flags.any():
        out["nonstd"] = np.bincount(flags[flags > 0], minlength=256)
        alien = np.flatnonzero(np.frombuffer(joined.translate(_ALIEN), np.uint8))
        if len(alien):
            out["alien"] = (int(np.searchsorted(ends, alien[0])), chr(joined[alien[0]]))
    for s, name in enumerate(SPLITS):
        idx = np.flatnonzero(keep & (split == s))
        if name == "train":  # join the gaps between the other records, then drop the '>' separators
            other = np.flatnonzero(~keep | (split != s))
            gaps = zip(np.r_[0, ends[other] + 1].tolist(), np.r_[starts[other], len(joined)].tolist(),
                       strict=True)
            out["data"][name] = b"".join([joined[a:b] for a, b in gaps]).replace(b">", b"").translate(_TOKENS)
            out["sizes"][name] = lengths[idx]
        else:
            spans = zip(idx.tolist(), starts[idx].tolist(), ends[idx].tolist(), strict=True)
            parts = [b">%s\n%s\n" % (headers[i].rstrip(), joined[a:b]) for i, a, b in spans]
            out["data"][name] = b"".join(parts)
            out["sizes"][name] = np.fromiter(map(len, parts), np.int64, len(parts))
    return out


def _raise_bad_header(buf: bytes):
    for k, record in enumerate(buf.split(b"\n>")):
        header, _, sequence = record.removeprefix(b">").partition(b"\n")
        try:
            parse_header(header)
        except ValueError as exc:
            raise _BlockError(k, str(exc)) from None
        for part, what in ((header, "header"), (sequence, "sequence")):
            if b">" in part:
                raise _BlockError(k, f"'>' inside the {what} (a header starts its own line)")
    raise _BlockError(0, "unparseable FASTA block")


class _Pass1:
    """Streams blocks through `_parse_block` (in worker processes when there is more than one block) and
    merges the results in input order: family registry, counts and the per-split temporary stores."""

    def __init__(self, path, work, seed, test_fraction, val_fraction, min_len, max_len, workers):
        self.path, self.workers = path, workers
        cut_val = test_fraction + (1.0 - test_fraction) * val_fraction
        self.config = (seed, test_fraction, cut_val, max(min_len, 1), max_len)
        self.families = _Families()
        out = work.parent  # the stores' payload files become the outputs (see _Store.filter)
        self.stores = {"train": _Store(out / "train_tokens.npy", work, "train", prefix=_NPY_HEADER),
                       **{s: _Store(out / f"{s}.fa", work, s) for s in ("val", "test")}}
        self.n_records = self.n_residues = self.n_bytes = 0
        self.split_counts = np.zeros(3, np.int64)
        self.dropped = {"empty": 0, "short": 0, "long": 0}
        self.counts = np.zeros((3, 0), np.int64)  # per split and family, after the length filter
        self.train_residues = np.zeros(0, np.int64)
        self.nonstandard = np.zeros(256, np.int64)
        self.warned = 0

    def run(self) -> None:
        pool, pending = None, collections.deque()
        if self.workers > 1 and self.path.stat().st_size > _BLOCK // 4:
            # fork (no re-import of __main__) before the reader thread starts: all workers start at once
            # without the cyclic garbage collector: a block makes ~10^5 tuples and no cycles, and the collector's
            # passes over them cost ~6 % of the CPU
            pool = ProcessPoolExecutor(self.workers, mp_context=multiprocessing.get_context("fork"),
                                       initializer=gc.disable)
            pool.submit(int).result()
        try:
            for buf, end in fasta_blocks(self.path, _BLOCK):
                if pool is None:
                    self.merge(self.parse(functools.partial(_parse_block, buf, end, *self.config)))
                    continue
                pending.append(pool.submit(_parse_block, buf, end, *self.config))
                while len(pending) > 2 * self.workers:
                    self.merge(self.parse(pending.popleft().result))
            while pending:
                self.merge(self.parse(pending.popleft().result))
        finally:
            if pool is not None:
                pool.shutdown(cancel_futures=True)
            for store in self.stores.values():
                store.close()

    def parse(self, result) -> dict:
        try:
            return result()
        except _BlockError as exc:
            record = self.n_records + exc.args[0] + 1
            raise InputError(f"{self.path}: record {record}: {exc.args[1]}") from None

    def merge(self, p: dict) -> None:
        first, n = self.n_records, p["n"]
        family = np.array([self.families[k] for k in p["keys"]], np.int32)[p["codes"]] if n else p["codes"]
        for i in p["empty"][: max(0, _WARN_LIMIT - self.warned)]:
            self.warned += 1
            log.warning("%s: record %d: empty sequence, skipped", self.path, first + int(i) + 1)
        if p["nonstd"] is not None:
            self.nonstandard += p["nonstd"]
            if p["alien"] and self.warned < _WARN_LIMIT:
                self.warned += 1
                log.warning("%s: record %d: residue %r outside the alphabet, encoded as X (21)",
                            self.path, first + p["alien"][0] + 1, p["alien"][1])
        for reason, count in p["dropped"].items():
            self.dropped[reason] += count
        self.n_records += n
        self.n_residues += int(p["lengths"].sum())
        self.n_bytes += p["end"]
        self.split_counts += np.bincount(p["split"], minlength=3)
        n_fam = len(self.families.acc)
        if n_fam > self.counts.shape[1]:
            self.counts = np.pad(self.counts, ((0, 0), (0, n_fam - self.counts.shape[1])))
            self.train_residues = np.pad(self.train_residues, (0, n_fam - len(self.train_residues)))
        for s, name in enumerate(SPLITS):
            idx = np.flatnonzero(p["keep"] & (p["split"] == s))
            fam, lengths = family[idx], p["lengths"][idx]
            self.counts[s] += np.bincount(fam, minlength=n_fam)
            if name == "train":
                self.train_residues += np.bincount(fam, weights=lengths, minlength=n_fam).astype(np.int64)
            self.stores[name].append(p["data"][name], lengths, fam, p["sizes"][name])


def _npy_header(dtype, shape) -> bytes:
    fh = io.BytesIO()
    np.lib.format.write_array_header_1_0(
        fh, {"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False, "shape": shape}
    )
    return fh.getvalue()


def _runs(keep: np.ndarray) -> np.ndarray:
    """(start, end) index pairs of the runs of True in a boolean array."""
    edges = np.flatnonzero(np.diff(np.concatenate(([False], keep, [False])).astype(np.int8)))
    return edges.reshape(-1, 2)


def _write_train(store: _Store, new_index: np.ndarray, n_seqs: int, n_tokens: int, outdir: Path) -> None:
    """Filter the train store in place into train_tokens.npy; write train_offsets.npy and train_family.npy."""
    header = _npy_header(np.uint8, (n_tokens,))
    if len(header) != store.prefix:
        raise RuntimeError(f"train_tokens.npy header is {len(header)} bytes, not the {store.prefix} reserved")
    with open(outdir / "train_offsets.npy", "wb") as off, open(outdir / "train_family.npy", "wb") as fam:
        off.write(_npy_header(np.int64, (n_seqs + 1,)))
        fam.write(_npy_header(np.int32, (n_seqs,)))
        total = 0
        off.write(np.zeros(1, np.int64).tobytes())
        for lengths, _, family in store.filter(new_index):
            off.write((total + np.cumsum(lengths, dtype=np.int64)).tobytes())
            total += int(lengths.sum(dtype=np.int64))
            fam.write(family.astype(np.int32).tobytes())
    if total != n_tokens:
        raise RuntimeError(f"train token count {total} != expected {n_tokens}")
    with open(store.paths["data"], "r+b") as tok:
        tok.write(header)


def _write_fasta(store: _Store, new_index: np.ndarray, work: Path, name: str) -> int:
    """Filter a held-out split's store in place into its FASTA; keep the records' offsets and families for
    pair sampling."""
    n = 0
    with open(work / f"{name}.koff", "wb") as koff, open(work / f"{name}.kfam", "wb") as kfam:
        position = 0
        for _, sizes, family in store.filter(new_index):
            koff.write((position + np.cumsum(sizes) - sizes).astype(np.int64).tobytes())
            position += int(sizes.sum())
            kfam.write(family.astype(np.int32).tobytes())
            n += len(family)
    return n


def sample_pairs(counts: np.ndarray, n_pairs: int, rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """Pairs as (family, rank) coordinates: half same-family (partner != anchor), half different-family.

    Positive anchors are uniform over sequences of families with >= 2 members, the partner uniform over the
    other members. Negative anchors are uniform over all sequences and the partner's family uniform over the
    other families (as the reference's SFP training sampler), its member uniform. With replacement.
    Returns (family_A, rank_A, family_B, rank_B, label) in shuffled order.
    """
    counts = np.asarray(counts, np.int64)
    n_pos = n_pairs // 2
    n_neg = n_pairs - n_pos
    present = np.flatnonzero(counts > 0)
    multi = counts * (counts >= 2)
    if n_pos and not multi.any():
        raise InputError("cannot sample same-family pairs: no family has two sequences in the split")
    if n_neg and len(present) < 2:
        raise InputError("cannot sample different-family pairs: fewer than two families in the split")
    fa = np.empty(n_pairs, np.int64)
    fb = np.empty(n_pairs, np.int64)
    if n_pos:
        fa[:n_pos] = fb[:n_pos] = rng.choice(len(counts), n_pos, p=multi / multi.sum())
    if n_neg:
        fa[n_pos:] = rng.choice(len(counts), n_neg, p=counts / counts.sum())
        pick = rng.integers(0, len(present) - 1, n_neg)
        pick += pick >= np.searchsorted(present, fa[n_pos:])
        fb[n_pos:] = present[pick]
    ra = (rng.random(n_pairs) * counts[fa]).astype(np.int64)
    rb = (rng.random(n_pairs) * counts[fb]).astype(np.int64)
    rb[:n_pos] = (rng.random(n_pos) * (counts[fa[:n_pos]] - 1)).astype(np.int64)
    rb[:n_pos] += rb[:n_pos] >= ra[:n_pos]
    label = np.r_[np.ones(n_pos, np.int8), np.zeros(n_neg, np.int8)]
    order = rng.permutation(n_pairs)
    return fa[order], ra[order], fb[order], rb[order], label[order]


def _resolve(kfam_path: Path, n: int, n_families: int, keys: np.ndarray) -> dict[int, int]:
    """Map (family << 32 | rank-in-family) keys to sequence indices in one chunked pass over the families."""
    wanted = np.unique(keys)
    found: dict[int, int] = {}
    seen = np.zeros(n_families, np.int64)
    for start in range(0, n, _CHUNK):
        fam = np.fromfile(kfam_path, np.int32, min(_CHUNK, n - start), offset=4 * start).astype(np.int64)
        order = np.argsort(fam, kind="stable")
        sorted_fam = fam[order]
        first = np.searchsorted(sorted_fam, sorted_fam, side="left")
        rank = np.empty(len(fam), np.int64)
        rank[order] = np.arange(len(fam)) - first
        key = (fam << 32) | (seen[fam] + rank)
        hit = np.flatnonzero(np.isin(key, wanted))
        found.update(zip(key[hit].tolist(), (start + hit).tolist(), strict=True))
        seen += np.bincount(fam, minlength=n_families)
    return found


def _write_pairs(
    outdir: Path, work: Path, name: str, n: int, counts: np.ndarray, n_pairs: int, rng: np.random.Generator
) -> int:
    path = outdir / f"{name}_pairs.tsv"
    rows = []
    if n_pairs:
        try:
            fa, ra, fb, rb, label = sample_pairs(counts, n_pairs, rng)
        except InputError as exc:
            raise InputError(f"{name} split ({n} sequences, n_{name}_pairs={n_pairs}): {exc}") from None
        keys_a, keys_b = (fa << 32) | ra, (fb << 32) | rb
        index = _resolve(work / f"{name}.kfam", n, len(counts), np.concatenate([keys_a, keys_b]))
        seqs = {}
        with open(work / f"{name}.koff", "rb") as koff, open(outdir / f"{name}.fa", "rb") as fasta:
            for i in sorted(set(index.values())):
                koff.seek(8 * i)
                fasta.seek(int(np.frombuffer(koff.read(8), np.int64)[0]))
                fasta.readline()
                seqs[i] = fasta.readline().rstrip(b"\n").decode("ascii")
        rows = [
            f"{seqs[index[a]]}\t{seqs[index[b]]}\t{y}\n"
            for a, b, y in zip(keys_a.tolist(), keys_b.tolist(), label.tolist(), strict=True)
        ]
    with open(path, "w") as fh:
        fh.write("\t".join(PAIR_COLUMNS) + "\n")
        fh.writelines(rows)
    return len(rows)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        while block := fh.read(_BLOCK):
            digest.update(block)
    return digest.hexdigest()


def preprocess(
    input_fasta_gz: Path,
    outdir: Path,
    seed: int = 2020,
    test_fraction: float = 0.2,
    min_len: int = 20,
    max_len: int | None = None,
    min_family_size: int = 1000,
    val_fraction: float = 0.01,
    n_test_pairs: int = 10000,
    n_val_pairs: int = 10000,
    pair_seed: int | None = None,
    workers: int = 2,
) -> dict:
    """Split, filter, tokenize and pair a Pfam-A.fasta(.gz) file into `outdir`; returns the stats dict.

    `workers` > 1 parses blocks in that many forked processes (for inputs larger than about one block);
    the outputs do not depend on it.
    """
    input_fasta_gz, outdir = Path(input_fasta_gz), Path(outdir)
    if not input_fasta_gz.exists():
        raise InputError(f"{input_fasta_gz}: file not found")
    if not (0 < test_fraction < 1 and 0 <= val_fraction < 1):
        raise ValueError("need 0 < test_fraction < 1 and 0 <= val_fraction < 1")
    outdir.parent.mkdir(parents=True, exist_ok=True)
    tmp = outdir.parent / f".{outdir.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    work = tmp / "work"
    work.mkdir(parents=True)
    params = dict(input=str(input_fasta_gz), seed=seed, test_fraction=test_fraction,
                  val_fraction=val_fraction, min_len=min_len, max_len=max_len,
                  min_family_size=min_family_size,
                  n_test_pairs=n_test_pairs, n_val_pairs=n_val_pairs,
                  pair_seed=seed if pair_seed is None else pair_seed)
    try:
        p1 = _Pass1(input_fasta_gz, work, seed, test_fraction, val_fraction, min_len, max_len, workers)
        p1.run()
        if not p1.n_records:
            raise InputError(f"{input_fasta_gz}: no FASTA records")
        stats = _finish(p1, tmp, work, params)
        shutil.rmtree(work)
        backup = outdir.parent / f".{outdir.name}.old-{os.getpid()}"
        if outdir.exists():
            os.replace(outdir, backup)
        os.replace(tmp, outdir)
        shutil.rmtree(backup, ignore_errors=True)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return stats


def _finish(p1: _Pass1, tmp: Path, work: Path, params: dict) -> dict:
    """Pass 2: family filter, shards, held-out FASTA, pairs, families.tsv and stats.json."""
    ids = np.array(p1.families.ids, dtype=object)
    accs = np.array(p1.families.acc, dtype=object)
    by_id = {}
    for token_index, fam_id in enumerate(ids):
        by_id.setdefault(fam_id, []).append(token_index)
    names = sorted(by_id, key=lambda f: (accs[by_id[f][0]], f))
    counts = np.array([p1.counts[:, by_id[f]].sum(axis=1) for f in names], np.int64).reshape(-1, 3)
    kept = np.flatnonzero(counts[:, 0] + counts[:, 1] >= params["min_family_size"])
    new_index = np.full(len(ids), -1, np.int32)
    for new, k in enumerate(kept):
        new_index[by_id[names[k]]] = new
    kept_counts = counts[kept]
    residues = np.array([p1.train_residues[by_id[names[k]]].sum() for k in kept], np.int64)
    n_train, n_tokens = int(kept_counts[:, 0].sum()), int(residues.sum())
    # each output is hashed in a helper thread as soon as it is complete (hashlib and file reads release the
    # GIL), overlapping the rest of pass 2 instead of a final read of 4+ GB at paper scale
    hasher = ThreadPoolExecutor(1)
    digests = {}

    def hash_outputs(*names):
        digests.update((name, hasher.submit(_sha256, tmp / name)) for name in names)

    _write_train(p1.stores["train"], new_index, n_train, n_tokens, tmp)
    hash_outputs("train_tokens.npy", "train_offsets.npy", "train_family.npy")
    n_held = {}
    for split in ("val", "test"):
        n_held[split] = _write_fasta(p1.stores[split], new_index, work, split)
        hash_outputs(f"{split}.fa")
    for store in p1.stores.values():
        store.remove()
    with open(tmp / "families.tsv", "w") as fh:
        fh.write("index\taccession\tfamily\tn_train\tn_val\tn_test\n")
        for new, k in enumerate(kept):
            fh.write(
                f"{new}\t{accs[by_id[names[k]][0]]}\t{names[k]}\t" + "\t".join(map(str, counts[k])) + "\n"
            )
    n_pairs = {
        s: _write_pairs(tmp, work, s, n_held[s], kept_counts[:, i], params[f"n_{s}_pairs"],
                        np.random.default_rng([params["pair_seed"], i]))
        for s, i in (("test", 2), ("val", 1))
    }
    nonstd = {chr(c): int(v) for c, v in enumerate(p1.nonstandard) if v}
    after_len = p1.counts.sum(axis=1)
    stats = {
        "params": params,
        "input": {
            "records": p1.n_records,
            "residues": p1.n_residues,
            "bytes": p1.n_bytes,
            "families": len(names),
        },
        "split": dict(zip(SPLITS, p1.split_counts.tolist(), strict=True)),
        "dropped_by_length": p1.dropped,
        "after_length_filter": dict(zip(SPLITS, after_len.tolist(), strict=True)),
        "families_kept": len(kept),
        "families_dropped": len(names) - len(kept),
        "after_family_filter": {
            "train": n_train,
            "val": n_held["val"],
            "test": n_held["test"],
            "train_tokens": n_tokens,
        },
        "pairs": n_pairs,
        "nonstandard_residues": {"total": sum(nonstd.values()), "by_char": nonstd},
    }
    hash_outputs(*(p.name for p in tmp.iterdir() if p.is_file() and p.name not in digests))
    stats["sha256"] = {name: digests[name].result() for name in sorted(digests)}
    hasher.shutdown()
    write_json(tmp / "stats.json", stats)
    return stats


def add_parser(subparsers) -> None:
    """`plus pfam {demo-corpus,preprocess}`."""
    parser = subparsers.add_parser("pfam", help="Pfam pre-training corpus")
    sub = parser.add_subparsers(dest="pfam_command", required=True)
    demo = sub.add_parser("demo-corpus", help="Pfam-A.fasta-format corpus from the embedded seed alignments")
    demo.add_argument("--seeds", type=Path, nargs="+", required=True, help="Stockholm seed files")
    demo.add_argument(
        "--search-fasta",
        type=Path,
        nargs="*",
        default=[],
        help="non-test protein FASTA files searched with the seed HMMs",
    )
    demo.add_argument("--out", type=Path, required=True, help="output .fasta.gz")
    demo.add_argument("--evalue", type=float, default=1e-5)
    demo.add_argument("--cpus", type=int, default=2)
    demo.add_argument("--no-enlarge", action="store_true", help="seed sequences only, no HMM search")
    pre = sub.add_parser("preprocess", help="split, filter, tokenize and pair Pfam-A.fasta.gz")
    pre.add_argument("--input", type=Path, required=True)
    pre.add_argument("--outdir", type=Path, required=True)
    pre.add_argument("--seed", type=int, default=2020)
    pre.add_argument("--test-fraction", type=float, default=0.2)
    pre.add_argument("--val-fraction", type=float, default=0.01)
    pre.add_argument("--min-len", type=int, default=20)
    pre.add_argument("--max-len", type=int, default=None)
    pre.add_argument("--min-family-size", type=int, default=1000)
    pre.add_argument("--n-test-pairs", type=int, default=10000)
    pre.add_argument("--n-val-pairs", type=int, default=10000)
    pre.add_argument("--pair-seed", type=int, default=None)
    pre.add_argument("--workers", type=int, default=2, help="block-parsing processes (outputs do not vary)")
    parser.set_defaults(func=run)


def run(args) -> None:
    if args.pfam_command == "demo-corpus":
        from plus.data.pfam_demo import build_demo_corpus

        stats = build_demo_corpus(
            args.seeds,
            args.search_fasta,
            args.out,
            evalue=args.evalue,
            cpus=args.cpus,
            enlarge=not args.no_enlarge,
        )
        print(
            f"{args.out}: {stats['records']} records ({stats['seed_records']} seed, "
            f"{stats['hit_records']} HMM hits) from {stats['families']} families"
        )
    else:
        stats = preprocess(
            args.input,
            args.outdir,
            seed=args.seed,
            test_fraction=args.test_fraction,
            min_len=args.min_len,
            max_len=args.max_len,
            min_family_size=args.min_family_size,
            val_fraction=args.val_fraction,
            n_test_pairs=args.n_test_pairs,
            n_val_pairs=args.n_val_pairs,
            pair_seed=args.pair_seed,
            workers=args.workers,
        )
        kept = stats["after_family_filter"]
        print(
            f"{args.outdir}: {kept['train']} train / {kept['val']} val / {kept['test']} test sequences, "
            f"{stats['families_kept']} families"
        )
