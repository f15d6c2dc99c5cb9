"""`plus embed`: real SCOP domains through tiny randomly initialised PLUS models saved as pretrain/finetune do."""

import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from plus import cli, embed
from plus.alphabet import encode
from plus.data.converters.homology import convert_homology_embedded
from plus.io import InputError, read_fasta
from plus.models import PlusRNN, PlusTFM, collate_rnn, tfm_single_input
from plus.report import plots
from plus.train.common import save_model

ROOT = Path(__file__).resolve().parents[1]
HOMOLOGY = ROOT / "data/embedded/homology"
TFM_CFG = {"family": "tfm", "hidden_dim": 16, "num_layers": 2, "num_heads": 2, "ff_dim": 32, "max_len": 60}

torch.set_num_threads(1)


def _domains(n=12):
    """The first n (None: all 711) id25 test domains: (id, sccs, sequence)."""
    records = read_fasta(HOMOLOGY / "Testdata_id25againstTrain.fasta.gz")
    return [(h.split()[0], h.split()[1], seq) for _, h, seq in records][:n]


def _fasta(path, records):
    path.write_text("".join(f">{i} {s}\n{q[:60]}\n{q[60:]}\n" for i, s, q in records))
    return str(path)


@pytest.fixture(scope="module")
def rnn(tmp_path_factory):
    torch.manual_seed(0)
    model = PlusRNN(hidden_dim=8, num_layers=2, proj_dim=4).eval()
    path = tmp_path_factory.mktemp("rnn") / "model.pt"
    save_model(path, model.state_dict())  # what `plus pretrain` writes
    return model, str(path)


def _slices(arrays, key, i):
    o = arrays["offsets"]
    return arrays[key][o[i] : o[i + 1]]


def test_fasta_embedding_layout_order_and_values(rnn, tmp_path):
    model, ckpt = rnn
    recs = _domains()
    out = tmp_path / "e.npz"
    assert cli.main(["embed", "--fasta", _fasta(tmp_path / "d.fa", recs), "--model", ckpt, "--batch-size", "5",
                     "--out", str(out)]) == 0
    a = dict(np.load(out, allow_pickle=False))
    assert set(a) == {"ids", "lengths", "offsets", "h", "pooled", "z", "z_pooled", "source"}
    assert list(a["ids"]) == [r[0] for r in recs]  # FASTA order although batched by length
    assert list(a["lengths"]) == [len(r[2]) for r in recs] and a["offsets"][-1] == len(a["h"])
    assert a["h"].shape == (sum(len(r[2]) for r in recs), 16) and a["z"].shape == (len(a["h"]), 4)
    assert a["pooled"].shape == (12, 16) and a["z_pooled"].shape == (12, 4)
    assert all(a[k].dtype == np.float32 for k in ("h", "pooled", "z", "z_pooled"))
    for i in range(12):
        np.testing.assert_allclose(a["pooled"][i], _slices(a, "h", i).mean(0), rtol=1e-6, atol=1e-7)
        np.testing.assert_allclose(a["z_pooled"][i], _slices(a, "z", i).mean(0), rtol=1e-6, atol=1e-7)
    with torch.no_grad():  # the model itself on the 4th domain alone: residue states, then fc
        h = model(*collate_rnn([encode(recs[3][2])]))[0]
    np.testing.assert_allclose(_slices(a, "h", 3), h.numpy(), atol=1e-5)
    np.testing.assert_allclose(_slices(a, "z", 3), model.fc(h).detach().numpy(), atol=1e-5)


@pytest.mark.parametrize("family", ["rnn", "tfm"])
def test_alone_equals_in_a_batch(rnn, family, tmp_path):
    recs = _domains()
    if family == "rnn":
        ckpt, hp = rnn[1], None
    else:
        torch.manual_seed(0)
        tfm = PlusTFM(**{k: v for k, v in TFM_CFG.items() if k != "family"}).eval()
        ckpt, hp = str(tmp_path / "tfm.pt"), {"model": TFM_CFG}
        save_model(ckpt, tfm.state_dict())
    batch = embed.embed(tmp_path / "all.npz", ckpt, hp, fasta=_fasta(tmp_path / "all.fa", recs), batch_size=12)
    for i in (0, 7):
        alone = embed.embed(tmp_path / "one.npz", ckpt, hp, fasta=_fasta(tmp_path / "one.fa", [recs[i]]))
        np.testing.assert_allclose(alone["h"], _slices(batch, "h", i), atol=1e-5)
        np.testing.assert_allclose(alone["pooled"][0], batch["pooled"][i], atol=1e-5)
    if family == "tfm":  # residue states sit between [CLS] and [SEP]; no projection; cut at max_len - 2
        with torch.no_grad():
            h = tfm(*(torch.as_tensor(x)[None] for x in tfm_single_input(encode(recs[5][2]), 60)))[0]
        np.testing.assert_allclose(_slices(batch, "h", 5), h[1 : len(recs[5][2]) + 1].numpy(), atol=1e-5)
        assert "z" not in batch and "z_pooled" not in batch
        assert list(batch["lengths"]) == [min(len(r[2]), 58) for r in recs] and max(len(r[2]) for r in recs) > 58


def test_finetuned_and_reference_named_checkpoints(rnn, tmp_path):
    model, ckpt = rnn
    fasta = _fasta(tmp_path / "d.fa", _domains(4))
    ref = embed.embed(tmp_path / "a.npz", ckpt, fasta=fasta)
    # `plus finetune` (homology): encoder.* with 4 ordinal thresholds, plus a head; the reference: module.*
    state = {f"encoder.{k}": v for k, v in model.state_dict().items() if not k.startswith("ordinal")}
    state.update({"encoder.ordinal_weight": torch.ones(1, 4), "head.output.weight": torch.zeros(2, 3)})
    save_model(tmp_path / "ft.pt", state)
    save_model(tmp_path / "ref.pt", {f"module.{k}": v for k, v in model.state_dict().items()})
    for path in ("ft.pt", "ref.pt"):
        got = embed.embed(tmp_path / "b.npz", tmp_path / path, fasta=fasta)
        np.testing.assert_array_equal(got["h"], ref["h"])
        np.testing.assert_array_equal(got["z_pooled"], ref["z_pooled"])
    with pytest.raises(InputError, match="does not fit this model"):  # wrong sizes named before any work
        embed.embed(tmp_path / "c.npz", ckpt, {"model": {**TFM_CFG}}, fasta=fasta)


def test_homology_task_data_feeds_the_embedding_plot(rnn, tmp_path):
    raw = {k: HOMOLOGY / f"Testdata_{k}againstTrain.fasta.gz" for k in ("id70", "id40", "id25")}
    convert_homology_embedded(raw, tmp_path / "homology", seed=0, max_train=20, n_pairs_dev=10, n_pairs_test=10)
    out = tmp_path / "emb/homology_test.npz"
    a = embed.embed(out, rnn[1], data=tmp_path / "homology", pooled_only=True)
    assert set(a) == {"ids", "lengths", "pooled", "z_pooled", "source", "labels", "sccs"}
    id25 = [(r[0], r[1]) for r in _domains(None)]
    # the manifest's test domain sets in order: id40 (not in id25, 265), then every id25 domain (711)
    assert list(a["source"]) == ["test_id40.fa"] * 265 + ["test_id25.fa"] * 711
    assert [(i, s) for i, s in zip(a["ids"][265:], a["sccs"][265:])] == id25
    assert list(a["labels"]) == [s.split(".")[0] for s in a["sccs"]] and set(a["labels"]) >= set("abcd")
    fig = plots.plot_embeddings(out, tmp_path / "p/emb.png", tmp_path / "p/emb.svg")
    assert (tmp_path / "p/emb.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "<svg" in (tmp_path / "p/emb.svg").read_text()
    assert "976 sequences from test_id40.fa, test_id25.fa" in fig.axes[0].get_title()
    assert any(t.get_text().startswith("a: all-α (n=") for t in fig.axes[0].get_legend().get_texts())
    train = embed.embed(tmp_path / "t.npz", rnn[1], data=tmp_path / "homology", sets=["train"], pooled_only=True)
    assert len(train["ids"]) == 20
    with pytest.raises(InputError, match="no sequence set 'test'"):
        embed.embed(tmp_path / "t.npz", rnn[1], data=tmp_path / "homology", sets=["test"])


def test_bad_fasta_names_file_and_record(rnn, tmp_path, capsys):
    recs = _domains(3)
    cases = {
        "star.fa": f">a\n{recs[0][2]}\n>b\n{recs[1][2]}*\n",
        "dup.fa": f">a\n{recs[0][2]}\n>a x\n{recs[1][2]}\n",
        "empty.fa": f">a\n{recs[0][2]}\n>b\n>c\n{recs[2][2]}\n",
        "nohead.fa": f"{recs[0][2]}\n>a\n{recs[1][2]}\n",
    }
    for name, text in cases.items():
        (tmp_path / name).write_text(text)
        out = tmp_path / f"{name}.npz"
        assert cli.main(["embed", "--fasta", str(tmp_path / name), "--model", rnn[1], "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"error: {tmp_path / name}: ") and err.count("\n") == 1, err
        assert ("line 1" if name == "nohead.fa" else "record 2") in err
        assert not out.exists()


def test_output_is_atomic(rnn, tmp_path, monkeypatch):
    fasta = _fasta(tmp_path / "d.fa", _domains(3))

    def broken_savez(path, **arrays):
        Path(path).write_bytes(b"half")
        raise OSError("disk full")

    monkeypatch.setattr(embed.np, "savez", broken_savez)
    with pytest.raises(OSError, match="disk full"):
        embed.embed(tmp_path / "out/e.npz", rnn[1], fasta=fasta)
    assert list((tmp_path / "out").iterdir()) == []


def test_hdf5_output(rnn, tmp_path, monkeypatch):
    fasta = _fasta(tmp_path / "d.fa", _domains(3))
    with pytest.raises(InputError, match="unknown output format"):
        embed.embed(tmp_path / "e.pkl", rnn[1], fasta=fasta)
    with monkeypatch.context() as m:
        m.setitem(sys.modules, "h5py", None)  # as if h5py were not installed
        with pytest.raises(InputError, match=r"e\.h5: HDF5 output needs h5py"):
            embed.embed(tmp_path / "e.h5", rnn[1], fasta=fasta)
    h5py = pytest.importorskip("h5py")
    a = embed.embed(tmp_path / "e.h5", rnn[1], fasta=fasta)
    with h5py.File(tmp_path / "e.h5") as fh:
        assert [x.decode() for x in fh["ids"][()]] == list(a["ids"])
        np.testing.assert_array_equal(fh["h"][()], a["h"])
