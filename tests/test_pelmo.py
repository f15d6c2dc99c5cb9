"""P-ELMo through the workflow: LM pre-training on the embedded Pfam corpus (learns, resumes), homology
fine-tuning with and without contact maps (LM frozen), frozen-encoder fine-tuning of a protein-level task
(only the head trains), the contact-map PNG conventions and loss weighting, and the DAG / config checks."""

from __future__ import annotations

import shutil
import zlib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import torch
from PIL import Image
from test_workflow import snakemake, workdir  # the dry-run helpers of the workflow tests

from plus.data import convert as C
from plus.data.contacts import ContactMaps, read_contact_map
from plus.io import InputError, read_fasta, read_json, write_json
from plus.tasks.registry import get_task
from plus.train.common import seed_everything
from plus.train.evaluate import evaluate
from plus.train.finetune import finetune, homology_contacts
from plus.train.finetune_batches import make_batch
from plus.train.finetune_losses import combined_loss, contact_loss, task_loss
from plus.train.finetune_model import FinetuneModel, build_model
from plus.train.hparams import finetune_hp, finetune_settings
from plus.train.pretrain import pretrain, read_heldout_tokens

ROOT = Path(__file__).parents[1]
EMB = ROOT / "data" / "embedded"
MODEL = {"family": "pelmo", "hidden_dim": 16, "num_layers": 1, "proj_dim": 8, "lm_hidden_dim": 32,
         "lm_num_layers": 2, "lm_proj_dim": 16, "corpus": "elmo"}
HOMOLOGY = {"lr": 3e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 1, "patience": -1, "epoch_pairs": 48,
            "lambda_mlm": -1, "lambda_task": 0.1, "lambda_contact": 0.9, "contact_batch": 4, "augment": 0.05,
            "clip_grad_norm": 1.0, "max_dev": 30}
HOMOLOGY_HP = finetune_hp("pelmo", **HOMOLOGY)


def lm_hparams(**train):
    hp = {"epochs": 5, "batch_size": 16, "eval_batch_size": 64, "optimizer": "adam", "lr": 1e-2, "clip_grad_norm": 1.0,
          "mask_ratio": 0.0, "max_pred": 0, "lambda_mlm": 1.0, "lambda_sfp": -1, "eval_every": 18, "log_every": 6}
    hp.update(train)
    return {"model": MODEL, "train": hp, "fidelity": {}, "allow_cpu": True, "save_every_minutes": 10, "threads": 1}


def ft_hparams(train, head=None):
    return {"model": MODEL, "train": train, "head": head, "fidelity": {}, "allow_cpu": True, "threads": 1,
            "save_every_minutes": 10}


def run_lm(corpus, out: Path, hp):
    return pretrain(corpus, 3, hp, out / "state", out / "model.pt", out / "metrics.json", out / "curve.csv",
                    progress=False)


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """The embedded Pfam corpus without filters (P-ELMo's variant), a tiny pre-trained LM, converted
    homology and solubility data."""
    from plus.data.pfam import preprocess
    from plus.data.pfam_demo import build_demo_corpus

    tmp = tmp_path_factory.mktemp("pelmo")
    seeds = sorted(p for p in (EMB / "pfam").glob("*/*") if p.suffix != ".hmm")
    build_demo_corpus(seeds, [], tmp / "Pfam-A.fasta.gz", enlarge=False)
    preprocess(tmp / "Pfam-A.fasta.gz", tmp / "elmo", seed=2020, test_fraction=0.2, min_len=1, max_len=400,
               min_family_size=1, val_fraction=0.1, n_test_pairs=20, n_val_pairs=20)
    run_lm(tmp / "elmo", tmp / "lm", lm_hparams())
    C.convert_task("homology", "embedded", C.embedded_raw("homology", EMB), tmp / "homology", 0,
                   n_pairs_dev=100, n_pairs_test=100)
    C.convert_task("solubility", "embedded", C.embedded_raw("solubility", EMB), tmp / "solubility", 0, max_train=64)
    return tmp


@pytest.fixture(scope="module")
def homology_run(work):
    out = work / "ft_homology"
    hp = ft_hparams(HOMOLOGY)
    finetune("homology", work / "homology", 0, hp, out / "state", out / "model.pt", out / "curve.csv",
             pretrained=work / "lm/model.pt")
    evaluate("homology", work / "homology", out / "model.pt", 0, hp, out / "metrics.json", out / "pred.npz", n_boot=5)
    return out


def load(path):
    return torch.load(path, weights_only=True)


# ------------------------------------------------------------------ LM pre-training
def test_lm_pretraining_learns_beyond_residue_frequencies(work):
    m = read_json(work / "lm/metrics.json")
    curve = pd.read_csv(work / "lm/curve.csv")
    val, train = curve[curve["split"] == "val"], curve[curve["split"] == "train"]
    assert m["family"] == "pelmo" and m["selected_on"] == "test.fa" and m["test"]["n_sequences"] > 50
    assert {"lm_acc", "lm_loss"} <= set(val.columns) and "mlm_acc" not in curve.columns
    assert val["lm_loss"].iloc[-1] < val["lm_loss"].iloc[0] - 0.01
    assert train["loss"].iloc[-1] < train["loss"].iloc[0]
    # held-out cross-entropy below the unigram model's (training residue frequencies)
    freq = np.bincount(np.load(work / "elmo/train_tokens.npy"), minlength=22)[1:21] / 1.0
    test = np.concatenate(read_heldout_tokens(work / "elmo/test.fa"))
    test = test[(test > 0) & (test < 21)]
    unigram = float(-np.log(freq[test - 1] / freq.sum()).mean())
    print(f"P-ELMo LM test NLL {m['test']['lm_loss']:.3f} (unigram {unigram:.3f}), acc {m['test']['lm_acc']:.3f} "
          f"(frequency baseline {m['baselines']['lm_freq_acc']:.3f})")
    assert m["test"]["lm_loss"] < unigram
    state = load(work / "lm/model.pt")
    assert set(state) == set(FinetuneModel(get_task("homology"), MODEL, None, {}).lm.state_dict())


def test_lm_pretraining_resumes_from_its_state_to_the_same_model(work, tmp_path, signal_after_save):
    hp = {**lm_hparams(), "save_every_steps": 36}
    signal_after_save(1)  # SIGTERM after the save at step 36 of 90: the run stops there
    with pytest.raises(SystemExit):
        run_lm(work / "elmo", tmp_path, hp)
    signal_after_save(0)
    assert torch.load(tmp_path / "state/last.pt", weights_only=True)["payload"]["step"] == 36
    run_lm(work / "elmo", tmp_path, hp)
    a, b = load(work / "lm/model.pt"), load(tmp_path / "model.pt")
    assert all(torch.equal(a[k], b[k]) for k in a)
    pd.testing.assert_frame_equal(pd.read_csv(work / "lm/curve.csv").drop(columns="elapsed_s"),
                                  pd.read_csv(tmp_path / "curve.csv").drop(columns="elapsed_s"))


def test_lm_pretraining_refuses_an_sfp_loss(work, tmp_path):
    with pytest.raises(SystemExit, match="lambda_sfp"):
        run_lm(work / "elmo", tmp_path, lm_hparams(lambda_sfp=0.3))


# ------------------------------------------------------------------ fine-tuning
def test_homology_without_contact_maps_trains_the_encoder_on_a_frozen_lm(work, homology_run, capsys):
    lm, ft = load(work / "lm/model.pt"), load(homology_run / "model.pt")
    assert {k.split(".")[0] for k in ft} == {"lm", "encoder"}  # no contact head without contact maps
    assert all(torch.equal(lm[k], ft[f"lm.{k}"]) for k in lm)
    seed_everything(0)
    fresh = build_model(get_task("homology"), finetune_settings(ft_hparams(HOMOLOGY))).state_dict()
    assert not torch.equal(fresh["encoder.rnn.weight_ih_l0"], ft["encoder.rnn.weight_ih_l0"])
    metrics = read_json(homology_run / "metrics.json")
    assert metrics["pelmo"]["contact_map_loss"] is False and "no contact maps" in metrics["pelmo"]["note"]
    assert set(metrics["test_sets"]) == {"id40", "id25"}
    manifest = read_json(work / "homology/manifest.json")
    assert homology_contacts(get_task("homology"), "pelmo", work / "homology", manifest, HOMOLOGY_HP, set()) is None
    assert "contact-map loss is off" in capsys.readouterr().err


def test_frozen_encoder_finetuning_changes_only_the_head(work, homology_run, tmp_path):
    hp = ft_hparams({"lr": 5e-3, "batch_size": 16, "eval_batch_size": 64, "max_epochs": 1, "patience": 3,
                     "lambda_mlm": -1, "lambda_task": 1.0, "clip_grad_norm": 1.0, "max_dev": 40}, head=["h", 16])
    model = build_model(get_task("solubility"), finetune_settings(hp), homology_run / "model.pt")
    assert {n.split(".")[0] for n, p in model.named_parameters() if p.requires_grad} == {"head"}  # B17
    finetune("solubility", work / "solubility", 0, hp, tmp_path / "state", tmp_path / "model.pt",
             tmp_path / "curve.csv", pretrained=homology_run / "model.pt")
    before, after = load(homology_run / "model.pt"), load(tmp_path / "model.pt")
    changed = {k for k in after if k not in before or not torch.equal(before[k], after[k])}
    # the 1-threshold ordinal head is not carried over from homology's 4 thresholds (and is unused)
    assert {k for k in changed if not k.startswith("head.")} == {"encoder.ordinal_weight", "encoder.ordinal_bias"}
    assert {"head.hidden.weight", "head.output.weight"} <= changed
    m = evaluate("solubility", work / "solubility", tmp_path / "model.pt", 0, hp, tmp_path / "metrics.json",
                 tmp_path / "pred.npz", n_boot=5)
    assert m["pelmo"]["trained"] == "MLP head only" and 0 <= m["test_sets"]["deepsol"]["acc"] <= 1


def test_the_starting_checkpoint_must_fit_the_task(work, homology_run):
    with pytest.raises(InputError, match="homology model, got a language model"):
        build_model(get_task("solubility"), finetune_settings(ft_hparams(HOMOLOGY, head=["h", 16])),
                    work / "lm/model.pt")
    with pytest.raises(InputError, match="pre-trained P-ELMo LM, got a fine-tuned"):
        build_model(get_task("homology"), finetune_settings(ft_hparams(HOMOLOGY)), homology_run / "model.pt")


# ------------------------------------------------------------------ contact maps
def write_png(path: Path, pixels: np.ndarray) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels.astype(np.uint8), mode="L").save(path)


def test_contact_map_pixel_conventions(tmp_path):
    px = np.array([[255, 255, 255, 1],
                   [255, 0, 255, 255],
                   [255, 0, 0, 7],
                   [1, 255, 0, 0]])
    write_png(tmp_path / "m.png", px)
    labels = read_contact_map(tmp_path / "m.png", 4)
    # lower triangle, diagonal and first off-diagonal ignored (-1); 255 contact; 1 ignore; else no contact
    assert labels.tolist() == [[-1, -1, 1, -1],
                               [-1, -1, -1, 1],
                               [-1, -1, -1, -1],
                               [-1, -1, -1, -1]]
    px[0, 3] = 7
    write_png(tmp_path / "m.png", px)
    assert read_contact_map(tmp_path / "m.png")[0, 3] == 0
    with pytest.raises(InputError, match="m.png: contact map is 4 x 4 but the sequence has 5"):
        read_contact_map(tmp_path / "m.png", 5)
    with pytest.raises(InputError, match="not found"):
        read_contact_map(tmp_path / "none.png")


class FakeMaps:
    """Contact maps from a seeded generator, by domain id and length."""

    def labels(self, ident, length):
        rng = np.random.default_rng(zlib.crc32(ident.encode()))
        out = (rng.random((length, length)) < 0.2).astype(np.int8)
        out[np.tril_indices(length, k=1)] = -1
        return out


def test_contact_loss_is_the_bce_of_kept_entries_with_the_reference_b1_weighting():
    torch.manual_seed(0)
    task = get_task("homology")
    model = FinetuneModel(task, MODEL, None, {}, contact=True)
    rng = np.random.default_rng(1)
    recs = [(f"d{i}", f"e{i}", "".join(rng.choice(list("ACDEFGHIKL"), 12 + i)),
             "".join(rng.choice(list("ACDEFGHIKL"), 20 - i)), i % 5) for i in range(6)]
    batch = make_batch(task, "pelmo", recs, np.random.default_rng(2), HOMOLOGY_HP, None, mask=False,
                       contacts=FakeMaps())
    assert len(batch["cm_index"]) == 4 and len(batch["cmaps"]) == 8
    out, h = model(batch)
    la, lb = contact_loss(model, h, batch)
    z = model.encoder.project(h)
    for loss, offset, member, maps in ((la, 0, 2, batch["cmaps"][:4]), (lb, 6, 3, batch["cmaps"][4:])):
        logits, labels = [], []
        for i, m in zip(batch["cm_index"].tolist(), maps):  # each selected sequence on its own, unpadded
            n = len(recs[i][member])
            assert m.shape == (n, n)
            logits.append(model.contact(z[offset + i:offset + i + 1, :n])[0][m >= 0])
            labels.append(m[m >= 0].float())
        manual = torch.nn.functional.binary_cross_entropy_with_logits(torch.cat(logits), torch.cat(labels))
        assert loss.item() == pytest.approx(manual.item(), rel=1e-6)
    ordinal = task_loss(task, "pelmo", out, batch, {})
    ref = combined_loss(model, out, h, batch, HOMOLOGY_HP, {"b1_drop_second_mlm_loss": True})
    fixed = combined_loss(model, out, h, batch, HOMOLOGY_HP, {"b1_drop_second_mlm_loss": False})
    assert ref.item() == pytest.approx((0.1 * ordinal + (0.9 + 0.81) * la).item(), rel=1e-6)
    assert fixed.item() == pytest.approx((0.1 * ordinal + 0.9 * (la + lb) / 2).item(), rel=1e-6)


def with_contact_maps(src: Path, dst: Path) -> Path:
    """A copy of a converted homology directory with synthetic contact maps for its train and dev domains (a
    band of near-diagonal contacts plus seeded noise, a few ignored pixels), in the canonical layout."""
    shutil.copytree(src, dst)
    domains = read_json(src / "manifest.json")["domains"]
    seqs = {header.split()[0]: seq for name in (domains["train"], domains["dev"])
            for _, header, seq in read_fasta(src / name)}
    rng = np.random.default_rng(0)
    for ident, seq in seqs.items():
        i, j = np.indices((len(seq), len(seq)))
        px = np.where((abs(i - j) < 5) | (rng.random(i.shape) < 0.03), 255, 0)
        px[rng.random(i.shape) < 0.01] = 1
        write_png(dst / "cmap_2.06" / ident[2:4] / f"{ident}.png", px)
    manifest = read_json(dst / "manifest.json")
    manifest["contact_maps"] = {"2.06": {"dir": "cmap_2.06", "pngs": len(seqs)}}
    write_json(dst / "manifest.json", manifest)
    return dst


def test_homology_with_contact_maps_trains_a_symmetric_contact_head(work, tmp_path):
    data = with_contact_maps(work / "homology", tmp_path / "homology")
    hp = ft_hparams(HOMOLOGY)
    finetune("homology", data, 0, hp, tmp_path / "state", tmp_path / "model.pt", tmp_path / "curve.csv",
             pretrained=work / "lm/model.pt")
    state = load(tmp_path / "model.pt")
    w = state["contact.conv2.weight"]
    assert torch.allclose(w, w.transpose(2, 3))
    seed_everything(0)
    fresh = build_model(get_task("homology"), finetune_settings(hp), contact=True).state_dict()
    assert not torch.equal(fresh["contact.conv1.weight"], state["contact.conv1.weight"])
    lm = load(work / "lm/model.pt")
    assert all(torch.equal(lm[k], state[f"lm.{k}"]) for k in lm)
    m = evaluate("homology", data, tmp_path / "model.pt", 0, hp, tmp_path / "metrics.json", tmp_path / "p.npz",
                 n_boot=5)
    assert m["pelmo"]["contact_map_loss"] is True and "note" not in m["pelmo"]
    # a domain without a map stops the run before training, naming it
    first = next(read_fasta(data / "train.fa"))[1].split()[0]
    (data / "cmap_2.06" / first[2:4] / f"{first}.png").unlink()
    with pytest.raises(InputError, match=f"1 domains have no contact map, e.g. \\['{first}'\\]"):
        finetune("homology", data, 0, hp, tmp_path / "s2", tmp_path / "m2.pt", tmp_path / "c2.csv")


def test_contact_map_lookup_falls_back_to_the_d_prefix(tmp_path):
    write_png(tmp_path / "cmap_2.07/ab/d1abca1.png", np.zeros((3, 3)))
    maps = ContactMaps(tmp_path, {"contact_maps": {"2.07": {"dir": "cmap_2.07"}}})
    assert maps.path("g1abca1").name == "d1abca1.png"
    with pytest.raises(InputError, match="no contact map for domain 'e9xyz_1'"):
        maps.path("e9xyz_1")


# ------------------------------------------------------------------ workflow
def test_dag_chains_lm_then_homology_then_frozen_tasks(tmp_path):
    res = snakemake("-s", str(ROOT / "Snakefile"), "-n", "-p", "results/finetune/solubility/p-elmo/plus/seed0/"
                    "metrics.json", cwd=workdir(tmp_path))
    out = res.stdout
    assert "results/pfam/elmo/stats.json" in out and "--min-len 1 " in out and "--min-family-size 1 " in out
    assert "--pretrained results/pretrain/p-elmo/plus/seed0/model.pt" in out  # homology <- the LM
    assert "--task solubility --data results/data/solubility " \
           "--pretrained results/finetune/homology/p-elmo/plus/seed0/model.pt" in out  # others <- homology


@pytest.mark.parametrize("extra, message", [
    ("experiments:\n  - {model: p-elmo, ablations: [plus, mlm_only]}\n", "supports the ablations plus, corrected"),
    ("experiments:\n  - {model: p-elmo, ablations: [plus]}\ntasks: [solubility]\n", "add homology to tasks"),
])
def test_config_refuses_pelmo_settings_it_cannot_run(tmp_path, extra, message):
    wd = workdir(tmp_path)
    (wd / "bad.yaml").write_text(extra)
    res = snakemake("-s", str(ROOT / "Snakefile"), "--configfile", "bad.yaml", "-n", cwd=wd, check=False)
    assert res.returncode != 0 and message in res.stdout + res.stderr


def test_demo_config_defines_a_tiny_pelmo_that_is_not_run():
    import yaml

    demo = yaml.safe_load((ROOT / "demo/config.yaml").read_text())
    assert demo["models"]["p-elmo_tiny"]["family"] == "pelmo"
    assert all(e["model"] != "p-elmo_tiny" for e in demo["experiments"])
    assert demo["finetune"]["pelmo"]["tasks"]["homology"]["patience"] == -1
