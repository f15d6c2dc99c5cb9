"""`plus embed`: per-residue and pooled embeddings of protein sequences from a PLUS checkpoint.

Input: a FASTA file, or the sequences of a converted task directory (the homology domain FASTAs carry SCOP
labels). Output, one row per sequence in input order, all floats float32:

* ``ids`` (N,) first header word; ``lengths`` (N,) residues embedded; ``offsets`` (N + 1,) into the ragged
  per-residue arrays (sequence i is rows ``offsets[i]:offsets[i + 1]``);
* ``h`` (sum of lengths, D) last-layer encoder states, ``pooled`` (N, D) their mean over residues;
* PLUS-RNN only: ``z`` (sum of lengths, E) projection fc(h) and ``z_pooled`` (N, E). PLUS-TFM has no
  projection layer, so no z; its residue states exclude [CLS]/[SEP], and sequences longer than max_len - 2
  are truncated as in the reference (``lengths`` then is the truncated length);
* from task data: ``source`` (N,) split file, ``labels`` (N,) SCOP class letter (homology) or class name
  (protein classification tasks), ``sccs`` (N,) full SCOP code (homology).

``pooled_only`` leaves out h, z and offsets. The file is ``.npz`` (numpy) or ``.h5``/``.hdf5`` (needs h5py),
written atomically. Sequences are batched by length in eval mode without gradients; a sequence's embedding
does not depend on the batch it is in.
"""

from __future__ import annotations

import os
import re
import sys
from pathlib import Path

import numpy as np

from plus.alphabet import encode
from plus.arguments import hparams_json
from plus.data.tasks import check_seq, check_unique, load_manifest, read_split
from plus.io import InputError, atomic_path, read_fasta

FORMATS = {".npz": "npz", ".h5": "h5", ".hdf5": "h5"}


# ------------------------------------------------------------------ inputs
def fasta_records(path: str | os.PathLike) -> list[dict]:
    """Records (id, seq, source) of a FASTA file; empty or non-letter sequences and duplicate ids are errors."""
    out, seen = [], set()
    for record, header, seq in read_fasta(path):
        ident = header.split()[0]
        check_unique(path, record, ident, seen)
        check_seq(path, record, ident, seq)
        out.append({"id": ident, "seq": seq, "source": Path(path).name})
    if not out:
        raise InputError(f"{path}: empty file (no FASTA records)")
    return out


def task_records(data_dir: str | os.PathLike, sets: list[str] | None = None) -> list[dict]:
    """Records of a converted task directory: the named sets (homology: domain FASTAs of manifest `domains`;
    other tasks: train, dev and the test-set names). Default: every test set; for homology converted
    without test domain files the train domains."""
    manifest = load_manifest(data_dir)
    kind = manifest["kind"]
    if kind == "pair":
        files = dict(manifest.get("domains") or {})
    else:
        splits = manifest["splits"]
        files = {"train": splits["train"], "dev": splits["dev"], **splits.get("test", {})}
    if not sets:
        sets = [n for n in files if n not in ("train", "dev")] or ["train"]
        if sets == ["train"]:
            print(f"{data_dir}: no test sequence files; embedding the train set", file=sys.stderr)
    unknown = [s for s in sets if s not in files]
    if unknown:
        raise InputError(f"{data_dir}/manifest.json: no sequence set {unknown[0]!r} (available: {sorted(files)})")
    out, seen = [], set()
    for name in sets:
        path = Path(data_dir) / files[name]
        for record, rec in enumerate(read_split(data_dir, files[name], manifest), 1):
            check_unique(path, record, rec[0], seen)
            row = {"id": rec[0], "seq": rec[1], "source": files[name]}
            if kind == "pair":
                row.update(labels=rec[2].split(".")[0], sccs=rec[2])
            elif kind == "protein" and manifest["labels"]:
                row["labels"] = manifest["labels"][rec[2]]
            out.append(row)
    return out


# ------------------------------------------------------------------ model
def rnn_config(state: dict, path) -> dict:
    """PLUS-RNN sizes read off a state_dict (hidden, layers, projection)."""
    layers = [k for k in state if re.fullmatch(r"rnn\.weight_ih_l\d+", k)]
    if not layers or "fc.weight" not in state:
        raise InputError(f"{path}: not a PLUS-RNN state_dict (no rnn.weight_ih_l0 / fc.weight); "
                         "for other models give --hparams with the model config")
    return {"family": "rnn", "hidden_dim": int(state["rnn.weight_hh_l0"].shape[1]), "num_layers": len(layers),
            "proj_dim": int(state["fc.weight"].shape[0])}


def load_encoder(path: str | os.PathLike, model_cfg: dict | None = None, fidelity: dict | None = None):
    """The encoder of a pre-trained (`plus pretrain`), fine-tuned (`plus finetune`, `encoder.` prefix) or
    reference-named checkpoint, in eval mode; returns (encoder, has_z). Without `model_cfg` the PLUS-RNN
    sizes are read off the weights. z is only given when the checkpoint holds the projection fc."""
    from plus.models import load_state_dict_reference
    from plus.train.common import build_encoder, check_compatible, load_checkpoint

    state = load_checkpoint(path)
    if any(k.startswith("encoder.") for k in state):
        state = {k.removeprefix("encoder."): v for k, v in state.items() if k.startswith("encoder.")}
    model_cfg = model_cfg or rnn_config(state, path)
    encoder = build_encoder(model_cfg, fidelity or {})
    check_compatible(encoder, state, path)
    loaded, _ = load_state_dict_reference(encoder, state)
    has_z = model_cfg["family"] == "rnn" and {"fc.weight", "fc.bias"} <= set(loaded)
    return encoder.eval(), has_z


# ------------------------------------------------------------------ embedding
def embed_batch(encoder, seqs: list[str], has_z: bool, device) -> list[tuple[np.ndarray, np.ndarray | None]]:
    """(h (L, D), z (L, E) or None) per sequence, float32, without gradients."""
    import torch

    from plus.models import PlusRNN, collate_rnn, tfm_single_input

    tokens = [encode(s) for s in seqs]
    with torch.inference_mode():
        if isinstance(encoder, PlusRNN):
            x, lengths = collate_rnn(tokens)
            h = encoder(x.to(device), lengths.to(device))
            n = [len(t) for t in tokens]
        else:
            max_len = min(encoder.transformer.embed.pos_embed.pe.shape[1] - 3, max(map(len, tokens)) + 2)
            arrays = [tfm_single_input(t, max_len) for t in tokens]
            x, seg, mask = (torch.as_tensor(np.stack(a)).to(device) for a in zip(*arrays))
            h = encoder(x, seg, mask)[:, 1:]
            n = [min(len(t), max_len - 2) for t in tokens]
        z = encoder.project(h) if has_z else None
        return [(h[i, :k].float().cpu().numpy(), None if z is None else z[i, :k].float().cpu().numpy())
                for i, k in enumerate(n)]


def embed_records(encoder, records: list[dict], has_z: bool, device, batch_size: int = 32,
                  pooled_only: bool = False) -> dict[str, np.ndarray]:
    """The output arrays (see the module docstring) for `records`, in their order."""
    n = len(records)
    order = sorted(range(n), key=lambda i: -len(records[i]["seq"]))
    h, z, lengths, pooled, z_pooled = [None] * n, [None] * n, np.zeros(n, np.int64), [None] * n, [None] * n
    for b in range(0, n, batch_size):
        idx = order[b : b + batch_size]
        for i, (hi, zi) in zip(idx, embed_batch(encoder, [records[i]["seq"] for i in idx], has_z, device)):
            lengths[i], pooled[i] = len(hi), hi.mean(0)
            if has_z:
                z_pooled[i] = zi.mean(0)
            if not pooled_only:  # per-residue arrays are kept only when asked for (they dominate memory)
                h[i], z[i] = hi, zi
    out = {"ids": np.array([r["id"] for r in records]), "lengths": lengths, "pooled": np.stack(pooled)}
    if has_z:
        out["z_pooled"] = np.stack(z_pooled)
    if not pooled_only:
        out["offsets"] = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
        out["h"] = np.concatenate(h)
        if has_z:
            out["z"] = np.concatenate(z)
    for key in ("source", "labels", "sccs"):
        if all(key in r for r in records):
            out[key] = np.array([r[key] for r in records])
    return out


# ------------------------------------------------------------------ output
def output_format(path: str | os.PathLike) -> str:
    """"npz" or "h5" from the file name; HDF5 needs h5py."""
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt is None:
        raise InputError(f"{path}: unknown output format (use .npz, .h5 or .hdf5)")
    if fmt == "h5":
        try:
            import h5py  # noqa: F401
        except ImportError as exc:
            raise InputError(f"{path}: HDF5 output needs h5py (pip install h5py), or write .npz") from exc
    return fmt


def write_embeddings(path: str | os.PathLike, arrays: dict[str, np.ndarray]) -> None:
    """Write the arrays as .npz or HDF5 datasets (strings as UTF-8), atomically."""
    fmt = output_format(path)
    with atomic_path(path) as tmp:
        if fmt == "npz":
            np.savez(tmp, **arrays)
            return
        import h5py

        with h5py.File(tmp, "w") as fh:
            for key, value in arrays.items():
                if value.dtype.kind == "U":
                    fh.create_dataset(key, data=value.astype(object), dtype=h5py.string_dtype())
                else:
                    fh.create_dataset(key, data=value)


def embed(out, model_path, hparams: dict | None = None, fasta=None, data=None, sets=None, batch_size: int = 32,
          pooled_only: bool = False, threads: int | None = None) -> dict[str, np.ndarray]:
    """Embed a FASTA file or a task directory's sequences with the checkpoint `model_path` into `out`.
    `hparams` may give `model` (the model config; needed for PLUS-TFM) and `fidelity` (TFM layer norm)."""
    import torch

    output_format(out)
    if (fasta is None) == (data is None):
        raise InputError("give exactly one of a FASTA file or a task data directory")
    records = fasta_records(fasta) if fasta is not None else task_records(data, sets)
    hparams = hparams or {}
    if threads:
        torch.set_num_threads(threads)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = True, False
    encoder, has_z = load_encoder(model_path, hparams.get("model"), hparams.get("fidelity"))
    arrays = embed_records(encoder.to(device), records, has_z, device, batch_size, pooled_only)
    write_embeddings(out, arrays)
    print(f"embedded {len(records)} sequences ({int(arrays['lengths'].sum())} residues) on {device} -> {out}",
          file=sys.stderr)
    return arrays


def add_parser(subparsers) -> None:
    """`plus embed` (torch is imported when the command runs, not when the parser is built)."""
    p = subparsers.add_parser("embed", help="per-residue and pooled embeddings (h, z) of sequences, .npz or .h5")
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--fasta", help="FASTA file (ids = first header word)")
    src.add_argument("--data", help="converted task directory (manifest.json), e.g. results/data/homology")
    p.add_argument("--sets", nargs="*", help="with --data: sequence sets (default: the test sets)")
    p.add_argument("--model", required=True, help="model.pt of plus pretrain/finetune, or a reference state_dict")
    p.add_argument("--hparams", type=hparams_json, default=None,
                   help="JSON with `model` (needed for PLUS-TFM; PLUS-RNN sizes are read off the weights)")
    p.add_argument("--batch-size", type=int, default=32)
    p.add_argument("--pooled-only", action="store_true", help="leave out the per-residue h and z")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for torch")
    p.add_argument("--out", required=True, help=".npz, or .h5/.hdf5 (needs h5py)")
    p.set_defaults(func=run)


def run(a) -> None:
    embed(a.out, a.model, a.hparams, fasta=a.fasta, data=a.data, sets=a.sets, batch_size=a.batch_size,
          pooled_only=a.pooled_only, threads=a.threads)
