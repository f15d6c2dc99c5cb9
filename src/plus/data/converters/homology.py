"""Remote homology: SCOP domain pairs labelled by the levels they share -> pair task. Embedded: the SCOP 1.75
DeepSF domain sets; canonical: Bepler & Berger's SCOPe 2.06/2.07 files (scope.tar.gz) with contact maps."""

from __future__ import annotations

import os
import shutil
import tarfile
import tempfile
from pathlib import Path

import numpy as np

from plus.data.converters.archives import extract, tar_members
from plus.data.converters.common import Converted, TaskData, require, seeded_split, subsample, take
from plus.data.tasks import domain_lines, pair_lines, read_domains, read_pairs, write_task
from plus.io import InputError, as_created

LEVEL_NAMES = ["different class", "same class", "same fold", "same superfamily", "same family"]


def level_matrix(sccs: list[str]) -> np.ndarray:
    """(n, n) matrix of leading SCOP levels shared (0-4) between the sccs codes."""
    parts = [s.split(".") for s in sccs]
    levels = np.zeros((len(sccs), len(sccs)), dtype=np.int64)
    for depth in range(1, 5):
        keys = [".".join(p[:depth]) for p in parts]
        ids = {k: i for i, k in enumerate(sorted(set(keys)))}
        codes = np.array([ids[k] for k in keys])
        levels += codes[:, None] == codes[None, :]
    return levels


def stratified(levels: np.ndarray, n_pairs: int, rng: np.random.Generator) -> list[int]:
    """Indices of up to n_pairs // 5 items per similarity level 0-4 (all of a level when it has fewer),
    drawn without replacement, in ascending order."""
    quota, chosen = n_pairs // 5, []
    for level in range(5):
        idx = np.flatnonzero(levels == level)
        chosen.extend(idx if len(idx) <= quota else rng.choice(idx, quota, replace=False))
    return sorted(int(k) for k in chosen)


def sample_pairs(domains: list[tuple[str, str, str]], n_pairs: int, seed: int) -> list[tuple]:
    """Seeded, level-stratified pairs of distinct domains: up to n_pairs // 5 pairs per similarity level
    (all pairs of a level when it has fewer), sampled without replacement, in domain-file order."""
    levels = level_matrix([d[1] for d in domains])
    rows, cols = np.triu_indices(len(domains), 1)
    flat = levels[rows, cols]
    out = []
    for k in stratified(flat, n_pairs, np.random.default_rng([seed, 2])):
        a, b = domains[rows[k]], domains[cols[k]]
        out.append((a[0], b[0], a[2], b[2], int(flat[k])))
    return out


def _pairs_per_level(pairs: dict[str, list]) -> dict[str, list[int]]:
    return {name: np.bincount([p[4] for p in ps], minlength=5).tolist() for name, ps in pairs.items()}


def convert_homology_embedded(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                              dev_fraction: float = 0.2, n_pairs_dev: int = 500, n_pairs_test: int = 1000) -> dict:
    """SCOP 1.75 DeepSF domain sets -> train domains, dev pairs and two test pair sets.

    test "id25" = all id25 domains (711); test "id40" = id40 domains not in id25 (265); train/dev = the id70
    domains in neither (471), split at random (seeded, `dev_fraction` to dev). Pairs: level-stratified
    samples (`sample_pairs`) within dev and within each test set. raw keys: id70, id40, id25.
    """
    require(raw, HOMOLOGY.embedded_files, "homology", "embedded")
    id70, id40, id25 = (read_domains(raw[k]) for k in ("id70", "id40", "id25"))
    in25 = {d[0] for d in id25}
    test40 = [d for d in id40 if d[0] not in in25]
    held = in25 | {d[0] for d in id40}
    pool = [d for d in id70 if d[0] not in held]
    s = seeded_split(pool, range(len(pool)), (1 - dev_fraction, dev_fraction), seed, max_train)
    train, dev = s["train"], s["dev"]
    tests = {"id40": test40, "id25": id25}
    pairs = {"dev": sample_pairs(dev, n_pairs_dev, seed)}
    pairs.update({name: sample_pairs(d, n_pairs_test, seed) for name, d in tests.items()})
    files = {
        "train.fa": domain_lines(train),
        "dev.fa": domain_lines(dev),
        "dev_pairs.tsv": pair_lines(pairs["dev"]),
    }
    for name, doms in tests.items():
        files[f"test_{name}.fa"] = domain_lines(doms)
        files[f"test_{name}_pairs.tsv"] = pair_lines(pairs[name])
    splits = {"train": "train.fa", "dev": "dev_pairs.tsv", "test": {n: f"test_{n}_pairs.tsv" for n in tests}}
    rules = {
        "test id25": "all DeepSF id25 domains",
        "test id40": "DeepSF id40 domains not in id25",
        "train/dev": f"id70 domains in neither test set, seeded {1 - dev_fraction:g}/{dev_fraction:g} split",
        "pairs": f"level-stratified: up to {n_pairs_dev}//5 (dev) or {n_pairs_test}//5 (tests) pairs of "
        "distinct domains per level, seeded, without replacement",
        "similarity": "number of leading sccs levels shared (class, fold, superfamily, family)",
    }
    notes = (
        "SCOP 1.75 (DeepSF) stands in for SCOPe 2.06/2.07; no contact maps are embedded, so the P-ELMo "
        "homology contact-map loss is unavailable in the demo. Training pairs are all pairs of train.fa."
    )
    converted = Converted(
        "homology", "embedded", raw, seed, max_train, LEVEL_NAMES,
        train=train, dev=pairs["dev"], tests={n: pairs[n] for n in tests}, rules=rules, notes=notes,
        extra={"domains": {"train": "train.fa", "dev": "dev.fa", **{n: f"test_{n}.fa" for n in tests}},
               "contact_maps": None},
    )
    counts = {
        **converted.counts(),
        "domains": {"train": len(train), "dev": len(dev), **{n: len(d) for n, d in tests.items()}},
        "pairs_per_level": _pairs_per_level(pairs),
    }
    return write_task(outdir, converted.manifest(HOMOLOGY.kind, splits, counts), files)


# -- canonical: Bepler & Berger's SCOPe files --------------------------------------------------------------

SCOPE_PREFIX = "astral-scopedom-seqres-gd-sel-gs-bib-95-"
SCOPE_FILES = {
    "train": SCOPE_PREFIX + "2.06.train.train.fa",
    "dev": SCOPE_PREFIX + "2.06.train.dev.sampledpairs.txt",
    "2.06": SCOPE_PREFIX + "2.06.test.sampledpairs.txt",
    "2.07": SCOPE_PREFIX + "2.07-new.allpairs.txt",
    "domains_2.06": SCOPE_PREFIX + "2.06.test.fa",
    "domains_2.07": SCOPE_PREFIX + "2.07-new.fa",
}
HOMOLOGY_2_07 = ("sampled", "all")  # data.homology_test_2_07: the reference's file name says sampled pairs


def extract_contact_maps(archive, outdir: Path) -> dict[str, int]:
    """Copy the contact-map PNGs ``pdbstyle-2.0{6,7}/<sub>/<id>.png`` of the SCOPe archive into
    ``outdir/cmap_2.0{6,7}/<sub>/`` (each directory built aside and renamed in); returns PNG counts."""
    counts = {}
    with tarfile.open(archive) as tf:
        members = [m for m in tf.getmembers() if m.isfile() and m.name.endswith(".png")]
        for version in ("2.06", "2.07"):
            chosen = [m for m in members if f"pdbstyle-{version}/" in m.name]
            dest = Path(outdir) / f"cmap_{version}"
            tmp = Path(tempfile.mkdtemp(prefix=f".cmap_{version}.", dir=outdir))
            as_created(tmp)
            try:
                for m in chosen:
                    sub = Path(m.name.split(f"pdbstyle-{version}/", 1)[1])
                    if sub.is_absolute() or ".." in sub.parts:
                        raise InputError(f"{archive}: unsafe member path {m.name!r}")
                    (tmp / sub).parent.mkdir(parents=True, exist_ok=True)
                    with tf.extractfile(m) as src, open(tmp / sub, "wb") as dst:
                        shutil.copyfileobj(src, dst)
                if dest.exists():
                    shutil.rmtree(dest)
                os.replace(tmp, dest)
            finally:
                shutil.rmtree(tmp, ignore_errors=True)
            counts[version] = len(chosen)
    return counts


def convert_homology_canonical(raw: dict[str, Path], outdir: Path, seed: int, max_train: int | None = None,
                               contact_maps: bool = True, test_2_07: str = "sampled",
                               n_pairs_test: int = 100000) -> dict:
    """Bepler & Berger scope.tar.gz: 2.06 train.train FASTA -> train domains; 2.06 train.dev sampled pairs ->
    dev; 2.06 test sampled pairs -> test "2.06"; test "2.07" from the 2.07-new all pairs: a seeded
    level-stratified sample of up to `n_pairs_test` pairs (`test_2_07` "sampled", as the reference's
    homology_test_2.07_sampledpairs.txt) or all of them ("all", as Bepler & Berger); the 2.06 test and
    2.07-new domain FASTAs -> test_2.06.fa, test_2.07.fa (embeddings); contact-map PNGs -> cmap_2.06/,
    cmap_2.07/ (when `contact_maps`). raw key: archive.
    """
    require(raw, HOMOLOGY.canonical_artefacts, "homology", "canonical")
    if test_2_07 not in HOMOLOGY_2_07:
        raise InputError(f"homology: test_2_07 {test_2_07!r} is not one of {', '.join(HOMOLOGY_2_07)}")
    archive = raw["archive"]
    members = tar_members(archive, SCOPE_FILES)
    outdir = Path(outdir)
    with tempfile.TemporaryDirectory() as tmp:
        paths = extract(archive, members, Path(tmp))
        train = subsample(read_domains(paths["train"]), max_train, seed)
        pairs = {k: read_pairs(paths[k]) for k in ("dev", "2.06", "2.07")}
        tests = {v: read_domains(paths[f"domains_{v}"]) for v in ("2.06", "2.07")}
    all_2_07 = len(pairs["2.07"])
    if test_2_07 == "sampled":
        keep = stratified(np.array([p[4] for p in pairs["2.07"]]), n_pairs_test, np.random.default_rng([seed, 3]))
        pairs["2.07"] = take(pairs["2.07"], keep)
    cmaps = None
    if contact_maps:
        outdir.mkdir(parents=True, exist_ok=True)
        cmaps = {v: {"dir": f"cmap_{v}", "pngs": n} for v, n in extract_contact_maps(archive, outdir).items()}
    files = {"train.fa": domain_lines(train), "dev_pairs.tsv": pair_lines(pairs["dev"])}
    files.update({f"test_{v}_pairs.tsv": pair_lines(pairs[v]) for v in ("2.06", "2.07")})
    files.update({f"test_{v}.fa": domain_lines(tests[v]) for v in ("2.06", "2.07")})
    splits = {
        "train": "train.fa",
        "dev": "dev_pairs.tsv",
        "test": {v: f"test_{v}_pairs.tsv" for v in ("2.06", "2.07")},
    }
    rules = {
        "files": {k: Path(m.name).name for k, m in members.items()},
        "test 2.07": f"{len(pairs['2.07'])} of the {all_2_07} 2.07-new pairs: "
        + ("all" if test_2_07 == "all" else f"seeded level-stratified sample, up to {n_pairs_test}//5 per level")
        + f" (data.homology_test_2_07: {test_2_07})",
    }
    converted = Converted(
        "homology", "canonical", raw, seed, max_train, LEVEL_NAMES,
        train=train, dev=pairs["dev"], tests={v: pairs[v] for v in ("2.06", "2.07")}, rules=rules,
        notes="Bepler & Berger SCOPe 2.06/2.07 files used as released.",
        extra={"domains": {"train": "train.fa", **{f"test_{v}": f"test_{v}.fa" for v in ("2.06", "2.07")}},
               "contact_maps": cmaps},
    )
    counts = {**converted.counts(), "pairs_per_level": _pairs_per_level(pairs)}
    return write_task(outdir, converted.manifest(HOMOLOGY.kind, splits, counts), files)


HOMOLOGY = TaskData(
    "pair", convert_homology_embedded, convert_homology_canonical,
    {f"id{k}": f"Testdata_id{k}againstTrain.fasta.gz" for k in (70, 40, 25)},
    {"archive": "scope"},
    {"train": None, "dev": None, "test": {"2.06": None, "2.07": None}},
)
