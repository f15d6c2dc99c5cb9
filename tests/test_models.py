"""Models against the golden vectors recorded from the reference PLUS code (tests/golden/README.md). Sizes,
counts and seeds come from the golden set's own files (golden_set.py)."""

import json
import subprocess
import sys

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from golden_set import GOLDEN, hom_thresholds, init_seed, numbered, padded_length, rnn_kwargs, tfm_kwargs

from plus.alphabet import encode
from plus.models import (
    ContactHead,
    MLPHead,
    PElmo,
    PElmoLM,
    PlusRNN,
    PlusTFM,
    collate_rnn,
    expected_level,
    level_probs,
    load_state_dict_reference,
    plus_rnn,
    ssa_score,
    tfm_pair_input,
    tfm_single_input,
)

ATOL = 1e-5
IMPLS = ["flip", "packed"]


def golden_sd(name):
    return torch.load(GOLDEN / name, weights_only=True)


def npz(name):
    with np.load(GOLDEN / name) as f:
        return {k: torch.from_numpy(f[k]) for k in f.files}


def close(a, b, atol=ATOL, rtol=1e-4):
    torch.testing.assert_close(a, b.to(a.dtype), atol=atol, rtol=rtol)


def n_params(m):
    return sum(p.numel() for p in m.parameters())


@pytest.fixture(scope="module")
def rnn_vec():
    return npz("plus_rnn_vectors.npz")


def small_rnn(impl, sd="plus_rnn_sfp_state_dict.pt", k=None):
    m = PlusRNN(**rnn_kwargs(k), lstm_impl=impl)
    m.load_state_dict(golden_sd(sd))
    return m.eval()


# --- tokenization helpers ---------------------------------------------------------------------------

def test_collate_rnn_matches_reference():
    tok = json.loads((GOLDEN / "tokenization.json").read_text())["rnn"]
    tokens, lengths = collate_rnn([encode(s) for s in tok["inputs"]])
    assert tokens.tolist() == tok["collated_tokens"]
    assert lengths.tolist() == tok["collated_lengths"]


def test_collate_rnn_reproduces_golden_batch(rnn_vec):
    seqs = json.loads((GOLDEN / "plus_rnn_config.json").read_text())["sequences"]
    tokens, lengths = collate_rnn([encode(s) for s in seqs])
    assert torch.equal(tokens, rnn_vec["tokens"]) and torch.equal(lengths, rnn_vec["lengths"])


def test_tfm_inputs_match_reference():
    tok = json.loads((GOLDEN / "tokenization.json").read_text())["tfm"]
    for key in ("single", "single_truncated"):
        t, s, m = tfm_single_input(encode(tok[key]["x0"]), tok[key]["max_len"])
        assert (t.tolist(), s.tolist(), m.astype(int).tolist()) == (
            tok[key]["tokens"], tok[key]["segments"], tok[key]["input_mask"])
    for key in ("pair", "pair_truncated"):
        t, s, m = tfm_pair_input(encode(tok[key]["x0"]), encode(tok[key]["x1"]), tok[key]["max_len"])
        assert (t.tolist(), s.tolist(), m.astype(int).tolist()) == (
            tok[key]["tokens"], tok[key]["segments"], tok[key]["input_mask"])


def test_tfm_inputs_reproduce_golden_batches():
    v = npz("plus_tfm_vectors.npz")
    seqs = [encode(s) for s in json.loads((GOLDEN / "plus_rnn_config.json").read_text())["sequences"]]
    width = padded_length()
    for row, i in enumerate(v["single_seq_index"].tolist()):
        t, s, m = tfm_single_input(seqs[i], width)
        assert np.array_equal(t, v["single_tokens"][row]) and np.array_equal(s, v["single_segments"][row])
        assert np.array_equal(m, v["single_input_mask"][row])
    for row, (i, j) in enumerate(v["pair_seq_index"].tolist()):
        t, s, m = tfm_pair_input(seqs[i], seqs[j], width)
        assert np.array_equal(t, v["pair_tokens"][row]) and np.array_equal(s, v["pair_segments"][row])
        assert np.array_equal(m, v["pair_input_mask"][row])


# --- PLUS-RNN ---------------------------------------------------------------------------------------

def test_rnn_seeded_construction_equals_reference_init():
    torch.manual_seed(init_seed())
    sd = PlusRNN(**rnn_kwargs()).state_dict()
    ref = golden_sd("plus_rnn_sfp_state_dict.pt")
    assert list(sd) == list(ref)
    for k in ref:
        assert torch.equal(sd[k], ref[k]), k


@pytest.mark.parametrize("impl", IMPLS)
def test_rnn_golden_outputs(impl, rnn_vec):
    v = rnn_vec
    m = small_rnn(impl)
    with torch.no_grad():
        h = m(v["tokens"], v["lengths"])
        z = m.project(h)
        close(h, v["h"])  # padding included: 0 after each end-token output
        close(z, v["z"])
        close(m.mlm_logprobs(h, v["lm_masked_pos"]), v["lm_logprobs"])
        i, j = v["pairs"][:, 0], v["pairs"][:, 1]
        L = v["residue_lengths"]
        score = m.ssa_score(z[i], L[i], z[j], L[j])
        close(score, v["ssa_score"])
        sfp = m.ordinal_logits(score)
        close(sfp, v["sfp_logits"])
        close(F.binary_cross_entropy_with_logits(sfp, v["sfp_labels"].float()), v["sfp_loss"], rtol=1e-5)
        assert int(((sfp > 0.5) == v["sfp_labels"].bool()).sum()) == int(v["sfp_correct_ref"])

        hom = small_rnn(impl, "plus_rnn_hom_state_dict.pt", k=hom_thresholds())
        z_hom = hom.project(hom(v["tokens"], v["lengths"]))
        logits = hom.ordinal_logits(hom.ssa_score(z_hom[i], L[i], z_hom[j], L[j]))
        close(logits, v["hom_logits"])
        hom_loss = F.binary_cross_entropy_with_logits(logits, v["hom_cum_labels"].float())
        close(hom_loss, v["hom_loss"], rtol=1e-5)
        probs = level_probs(logits)
        close(probs, v["hom_level_probs"])
        close(expected_level(logits), v["hom_expected_level"])
        assert int((probs.argmax(1) == v["hom_levels"]).sum()) == int(v["hom_argmax_correct"])


@pytest.mark.parametrize("impl", IMPLS)
def test_rnn_pretrain_step_loss_and_gradients(impl):
    """One reference pre-training step (bug B1 loss): the loss and every parameter gradient."""
    x = npz("pretrain_step_inputs.npz")
    ref = json.loads((GOLDEN / "pretrain_step.json").read_text())
    m = small_rnn(impl).train()
    h0, h1 = m(x["tokens0"], x["lengths0"]), m(x["tokens1"], x["lengths1"])

    def mlm(h, k):
        lp = m.mlm_logprobs(h, x[f"masked_pos{k}"])
        nll = -lp.gather(2, x[f"masked_tokens{k}"][:, :, None])[:, :, 0]
        return nll[x[f"masked_weights{k}"]].mean()

    la, lb = mlm(h0, 0), mlm(h1, 1)
    logits = m.ordinal_logits(m.ssa_score(m.project(h0), x["lengths0"] - 2, m.project(h1), x["lengths1"] - 2))
    close(logits, x["sfp_logits"])
    sfp = F.binary_cross_entropy_with_logits(logits, x["labels"].float())
    assert la.item() == pytest.approx(ref["mlm_loss_A_unscaled"], rel=1e-5)
    assert lb.item() == pytest.approx(ref["mlm_loss_B_unscaled"], rel=1e-5)
    assert sfp.item() == pytest.approx(ref["sfp_bce_unscaled"], rel=1e-5)
    lam_lm, lam_cls = ref["run_config"]["lm_loss_lambda"], ref["run_config"]["cls_loss_lambda"]
    total = lam_lm * la + lam_lm * (lam_lm * la) + lam_cls * sfp  # B1: L_B replaced by lambda x L_A
    assert total.item() == pytest.approx(ref["ref_total_loss"], rel=1e-5)
    total.backward()
    for name, p in m.named_parameters():
        g = x[f"grad__{name}"]
        if name == "fc.bias":  # analytically zero (golden README): compare at the noise level only
            assert p.grad.abs().max() < 1e-6
            continue
        torch.testing.assert_close(p.grad, g, atol=1e-7, rtol=1e-4, msg=name)


def random_batch(lengths, seed=0):
    g = torch.Generator().manual_seed(seed)
    seqs = [torch.randint(1, 22, (n,), generator=g).numpy().astype(np.uint8) for n in lengths]
    return collate_rnn(seqs)


@pytest.mark.parametrize("grouped", [False, True])
def test_flip_equals_packed_outputs_and_gradients(grouped):
    lens = [37, 5, 60, 1, 22, 60, 13]
    if grouped:  # more rows than LSTM_CHUNK_ROWS: flip runs them in length-sorted groups
        lens = lens * 3 + [2, 59, 31]
        assert len(lens) > plus_rnn.LSTM_CHUNK_ROWS
    torch.manual_seed(1)
    flip = PlusRNN(hidden_dim=24, num_layers=3, proj_dim=8, lstm_impl="flip")
    packed = PlusRNN(hidden_dim=24, num_layers=3, proj_dim=8, lstm_impl="packed")
    packed.load_state_dict(flip.state_dict())
    tokens, lengths = random_batch(lens)
    w = torch.randn(tokens.shape[0], tokens.shape[1] - 2, 8)
    outs = []
    for m in (flip, packed):
        h = m(tokens, lengths)
        z = m.project(h)
        L = lengths - 2
        s = m.ssa_score(z, L, z.flip(0), L.flip(0))
        ((z * w).sum() + s.sum() + m.mlm_logprobs(h, torch.zeros_like(tokens[:, :3])).sum()).backward()
        outs.append((h, {n: p.grad for n, p in m.named_parameters()}))
    (hf, gf), (hp, gp) = outs
    torch.testing.assert_close(hf, hp, atol=1e-6, rtol=0)
    for n in gf:
        torch.testing.assert_close(gf[n], gp[n], atol=1e-6, rtol=1e-5, msg=n)


@pytest.mark.parametrize("impl", IMPLS)
def test_rnn_batch_invariance(impl):
    torch.manual_seed(2)
    m = PlusRNN(hidden_dim=32, num_layers=3, proj_dim=16, lstm_impl=impl).eval()
    lens = [50, 120, 7, 300, 49]
    tokens, lengths = random_batch(lens, seed=3)
    with torch.no_grad():
        h = m(tokens, lengths)
        z = m.project(h)
        for i in (0, 2, 3):
            t1, l1 = tokens[i : i + 1, : lens[i] + 2], lengths[i : i + 1]
            h1 = m(t1, l1)
            close(h1[0], h[i, : lens[i]])
            close(m.project(h1)[0], z[i, : lens[i]])


def test_rnn_rejects_unknown_impl():
    with pytest.raises(ValueError, match="lstm_impl"):
        PlusRNN(hidden_dim=8, num_layers=1, lstm_impl="cudnn")


def test_parameter_counts():
    assert n_params(PlusRNN()) == 14_915_145
    assert n_params(PlusRNN(hidden_dim=1024)) == 59_189_833
    assert n_params(PlusTFM()) == 85_670_427
    assert n_params(PElmoLM()) == 12_707_299
    assert n_params(PElmo()) == 19_034_235


# --- SSA ----------------------------------------------------------------------------------------------

def ssa_loop(z0, len0, z1, len1):
    """The reference's per-pair computation on unpadded tensors."""
    out = []
    for a, la, b, lb in zip(z0, len0, z1, len1, strict=True):
        s = -(a[:la, None] - b[None, :lb]).abs().sum(-1)
        al, be = s.softmax(1), s.softmax(0)
        c = al + be - al * be
        out.append((c * s).sum() / c.sum())
    return torch.stack(out)


def test_ssa_matches_per_pair_loop_with_padding_and_chunks(monkeypatch):
    g = torch.Generator().manual_seed(4)
    z0, z1 = torch.randn(5, 40, 6, generator=g, dtype=torch.float64), torch.randn(5, 33, 6, generator=g,
                                                                                 dtype=torch.float64)
    len0, len1 = torch.tensor([40, 1, 17, 25, 3]), torch.tensor([33, 9, 1, 20, 33])
    grads = []
    for block in (1 << 22, 2 * 40 * 33):  # one chunk, then checkpointed chunks of 2 pairs
        monkeypatch.setattr(plus_rnn, "_SSA_BLOCK", block)
        a, b = z0.clone().requires_grad_(), z1.clone().requires_grad_()
        s = ssa_score(a, len0, b, len1)
        (s * torch.arange(1.0, 6.0)).sum().backward()
        grads.append((s.detach(), a.grad, b.grad))
    a, b = z0.float().requires_grad_(), z1.float().requires_grad_()
    ref = ssa_loop(a, len0, b, len1)
    (ref * torch.arange(1.0, 6.0)).sum().backward()
    for s, ga, gb in grads:
        close(s, ref.detach())
        close(ga, a.grad, atol=1e-6)
        close(gb, b.grad, atol=1e-6)
        assert ga[1, 1:].abs().max() == 0 and gb[2, 1:].abs().max() == 0  # padding gets no gradient
    assert (ref <= 0).all()


@pytest.mark.slow
def test_ssa_memory_32_pairs_of_1000():
    """Forward + backward SSA for 32 pairs of 1000 residues, E = 100, measured as peak RSS in a subprocess."""
    code = (
        "import resource, torch\n"
        "from plus.models import ssa_score\n"
        "torch.set_num_threads(2)\n"
        "z0, z1 = (torch.randn(32, 1000, 100, requires_grad=True) for _ in range(2))\n"
        "L = torch.full((32,), 1000)\n"
        "base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss\n"
        "ssa_score(z0, L, z1, L).sum().backward()\n"
        "print(base, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    base_kb, peak_kb = map(int, out.split())
    assert peak_kb / 1024 < 1500, f"peak RSS {peak_kb / 1024:.0f} MB"
    assert (peak_kb - base_kb) / 1024 < 1000


# --- PLUS-TFM -----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def tfm():
    m = PlusTFM(**tfm_kwargs())
    ref = golden_sd("plus_tfm_state_dict.pt")
    assert set(m.state_dict()) == set(ref)
    pe = "transformer.embed.pos_embed.pe"
    torch.testing.assert_close(m.state_dict()[pe], ref[pe])
    m.load_state_dict(ref)
    return m.eval()


@pytest.mark.parametrize("kind", ["single", "pair"])
def test_tfm_golden_outputs(tfm, kind):
    v = npz("plus_tfm_vectors.npz")
    with torch.no_grad():
        h = tfm(v[f"{kind}_tokens"], v[f"{kind}_segments"], v[f"{kind}_input_mask"])
        close(h, v[f"{kind}_h"])
        close(tfm.mlm_logprobs(h, v[f"{kind}_masked_pos"]), v[f"{kind}_lm_logprobs"])
        close(tfm.cls_logits(h), v[f"{kind}_cls_logits"])
        if kind == "single":
            close(tfm.token_logits(h), v["single_token_cls_logits"])


def test_tfm_decoder_tied_and_layernorm_variants():
    m = PlusTFM(hidden_dim=16, num_layers=1, num_heads=2, ff_dim=32, max_len=20, layernorm="standard")
    assert m.decoder.weight is m.transformer.embed.tok_embed.weight
    x = torch.randn(3, 16)
    ln = m.transformer.embed.norm
    close(ln(x), F.layer_norm(x, (16,), eps=1e-12))
    ref = PlusTFM(hidden_dim=16, num_layers=1, num_heads=2, ff_dim=32, max_len=20).transformer.embed.norm
    close(ref(x), (x - x.mean(1, keepdim=True)) / torch.sqrt(x.std(1, keepdim=True) + 1e-12))
    with pytest.raises(ValueError, match="layernorm"):
        PlusTFM(hidden_dim=16, num_layers=1, num_heads=2, ff_dim=32, layernorm="rms")


# --- heads --------------------------------------------------------------------------------------------

def mlp_head(state_file, pooling):
    """The recorded MLP head, sized from its weights: hidden (d_hid, d_in), output (n_out, d_hid)."""
    sd = golden_sd(state_file)
    (d_hid, d_in), n_out = sd["hidden.weight"].shape, sd["output.weight"].shape[0]
    m = MLPHead(d_in, d_hid, n_out, pooling=pooling)
    m.load_state_dict(sd)
    return m


@pytest.fixture(scope="module")
def mlp_inputs():
    v = npz("mlp_vectors.npz")
    xs = [v[f"input_{k}"] for k in range(numbered("mlp_vectors.npz", "input_"))]
    x = torch.nn.utils.rnn.pad_sequence(xs, batch_first=True)
    mask = torch.arange(x.shape[1])[None] < torch.tensor([len(a) for a in xs])[:, None]
    return v, x, mask


def test_mlp_protein_reference_sum_and_attention(mlp_inputs):
    v, x, mask = mlp_inputs
    ref = mlp_head("mlp_protein_state_dict.pt", "reference_sum")
    close(ref.pool(x, mask), v["pooled_ref"])
    out = ref(x, mask)
    close(out, v["protein_logits_ref"])
    out.sum().backward()
    assert ref.attention.weight.grad is None  # B2: the attention parameters are unused
    att = mlp_head("mlp_protein_state_dict.pt", "attention")
    close(att(x, mask), v["protein_logits_softmax_over_residues"])


def test_mlp_residue(mlp_inputs):
    v, x, mask = mlp_inputs
    m = mlp_head("mlp_residue_state_dict.pt", None)
    out = m(x, mask)
    assert out.shape == (*x.shape[:2], m.output.out_features)
    for k in range(len(x)):
        close(out[k, : int(mask[k].sum())], v[f"residue_logits_{k}"])


def test_contact_head_symmetric():
    torch.manual_seed(5)
    m = ContactHead(embed_dim=8)
    w = m.conv2.weight
    assert torch.equal(w, w.transpose(2, 3))
    with torch.no_grad():
        w.add_(torch.randn_like(w))
    m.symmetrize_()
    assert torch.equal(w, w.transpose(2, 3))
    out = m(torch.randn(2, 11, 8))
    assert out.shape == (2, 11, 11)
    close(out, out.transpose(1, 2), atol=1e-6)


# --- P-ELMo -------------------------------------------------------------------------------------------

def test_pelmo_lm_context_and_shapes():
    torch.manual_seed(6)
    lm = PElmoLM(hidden_dim=16, num_layers=2)
    tokens, lengths = random_batch([9, 14, 4], seed=7)
    feats = lm.encode(tokens, lengths)
    assert feats.shape == (3, 14, 64) and lm.out_dim == 64
    assert lm(tokens, lengths).shape == (3, 16, 21)
    # residue 5's features see every residue except itself
    changed = tokens.clone()
    changed[:, 6] = torch.where(changed[:, 6] == 1, 2, 1)
    f2 = lm.encode(changed, lengths)
    close(f2[:2, 5], feats[:2, 5])
    assert (f2[:2, 4] - feats[:2, 4]).abs().max() > 1e-4
    assert (feats[2, 4:] == 0).all()


def test_pelmo_encoder_batch_invariance_and_heads():
    torch.manual_seed(8)
    lm = PElmoLM(hidden_dim=16, num_layers=2)
    m = PElmo(lm_dim=lm.out_dim, lm_proj_dim=12, hidden_dim=10, num_layers=3, proj_dim=5, n_thresholds=4)
    m.eval()
    lens = [30, 8, 51]
    tokens, lengths = random_batch(lens, seed=9)
    with torch.no_grad():
        h = m(tokens, lengths, lm.encode(tokens, lengths))
        assert h.shape == (3, 51, 20)
        t1, l1 = tokens[1:2, :10], lengths[1:2]
        close(m(t1, l1, lm.encode(t1, l1))[0], h[1, :8])
        z = m.project(h)
        L = lengths - 2
        assert m.ordinal_logits(m.ssa_score(z, L, z, L)).shape == (3, 4)


# --- loading ------------------------------------------------------------------------------------------

def test_load_state_dict_reference_prefix_and_shape_rules():
    sfp = golden_sd("plus_rnn_sfp_state_dict.pt")
    assert hom_thresholds() != rnn_kwargs()["n_thresholds"]
    m = PlusRNN(**rnn_kwargs(hom_thresholds()))
    loaded, skipped = load_state_dict_reference(m, {f"module.{k}": v for k, v in sfp.items()})
    assert sorted(skipped) == ["module.ordinal_bias", "module.ordinal_weight"]
    assert len(loaded) == len(sfp) - 2
    last = f"rnn.weight_hh_l{rnn_kwargs()['num_layers'] - 1}_reverse"
    assert torch.equal(m.state_dict()[last], sfp[last])
    assert torch.equal(m.ordinal_bias, torch.full((hom_thresholds(),), 10.0))  # the reference's initial offset
    tfm = PlusTFM(**{**tfm_kwargs(), "n_classes": tfm_kwargs()["n_classes"] + 3})
    loaded, skipped = load_state_dict_reference(tfm, golden_sd("plus_tfm_state_dict.pt"), skip=("cls",))
    assert sorted(skipped) == ["cls.bias", "cls.weight"]
