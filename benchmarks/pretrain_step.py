"""One PLUS pre-training step (MLM + SFP: forward, backward, clip, Adam) on 32 pairs of lengths U[200, 300]:
our implementation vs a reference-style one (stock packed nn.LSTM, sequences of a pair encoded in two calls,
per-pair Python SSA loop over an L0 x L1 x E tensor), in the same process. Prints one JSON line.

padded_lstm_bound_tokens_per_s is our full step with the BiLSTM replaced by one plain padded nn.LSTM call
on the whole batch (no reversal, so not exact): the stock LSTM kernel's speed. Ours runs the rows in
length-sorted groups (plus.models.plus_rnn.LSTM_CHUNK_ROWS), so it can beat that figure.

Protocol: 1 warm-up step then --steps timed steps for each implementation, the reference-style one first
(a fresh process, as the reference code runs in; after our steps its allocator state would be warmer).

    python benchmarks/pretrain_step.py [--model base|large|tfm] [--bf16] [--ssa-memory] [--steps N]
                                       [--tuned-allocator]

By default the process runs with the allocator a user gets (no GLIBC_TUNABLES); --tuned-allocator reruns it
with the setting the `plus` command gives this model's jobs (plus.cli.family_tunables).
"""

import argparse
import json
import os
import resource
import subprocess
import sys
import time

import numpy as np
import torch
import torch.nn.functional as F

from plus.cli import family_tunables, tune_allocator
from plus.models import PlusRNN, PlusTFM, tfm_pair_input
from plus.models.plus_rnn import lstm_autocast, run_bilstm
from plus.train.common import autocast

# peak RSS from /proc (VmHWM starts afresh at exec; ru_maxrss would carry this process's peak into the child)
SSA_MEMORY_CHILD = """
import sys, torch
from plus.models import ssa_score
def hwm_mb():
    return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM")) / 1024
dev = sys.argv[1]
torch.set_num_threads(int(sys.argv[2]))
z0, z1 = (torch.randn(32, 1000, 100, device=dev, requires_grad=True) for _ in range(2))
L = torch.full((32,), 1000, device=dev)
base = hwm_mb()
ssa_score(z0, L, z1, L).sum().backward()
cuda = torch.cuda.max_memory_allocated() / 2**20 if dev == "cuda" else None
print(base, hwm_mb(), cuda)
"""


def make_batch(args, g, device):
    """Two sides of `pairs` pairs: token lists, masked positions/targets (15%, at most 50), labels."""
    sides = []
    for _ in range(2):
        lens = torch.randint(args.minlen, args.maxlen + 1, (args.pairs,), generator=g)
        seqs = [torch.randint(1, 21, (int(n),), generator=g) for n in lens]
        n_pred = min(50, int(0.15 * args.minlen))
        pos = torch.stack([torch.randperm(int(n), generator=g)[:n_pred] for n in lens])
        targets = torch.stack([s[p] for s, p in zip(seqs, pos, strict=True)])
        masked = [s.clone().index_fill_(0, p, 21) for s, p in zip(seqs, pos, strict=True)]
        sides.append((masked, lens, pos, targets))
    labels = torch.randint(0, 2, (args.pairs, 1), generator=g).float()
    return sides, labels.to(device)


def collate(seqs, device):
    lengths = torch.tensor([len(s) + 2 for s in seqs])
    tokens = torch.zeros(len(seqs), int(lengths.max()), dtype=torch.long)
    for i, s in enumerate(seqs):
        tokens[i, 1 : len(s) + 1] = s
    return tokens.to(device), lengths.to(device)


def ssa_loop(z0, len0, z1, len1):
    """Reference-style SSA: one pair at a time, materialising L0 x L1 x E."""
    out = []
    for a, la, b, lb in zip(z0, len0.tolist(), z1, len1.tolist(), strict=True):
        s = -(a[:la, None] - b[None, :lb]).abs().sum(-1)
        al, be = s.softmax(1), s.softmax(0)
        c = al + be - al * be
        out.append((c * s).sum() / c.sum())
    return torch.stack(out)


def rnn_step(model, opt, batch, labels, mode, device, bf16):
    """mode: "ours" (one flip/cuDNN call on both sides), "bound" (one padded nn.LSTM call), "reference"."""
    (s0, l0, p0, t0), (s1, l1, p1, t1) = batch
    n = len(s0)
    with autocast(device, "bf16" if bf16 else "fp32"):
        if mode == "reference":
            hs = [model(*collate(s, device)) for s in (s0, s1)]
            h0, h1 = hs
        else:
            tokens, lengths = collate(s0 + s1, device)
            x = model.embed(tokens)
            if mode == "bound":
                ctx, x = lstm_autocast(x)  # as run_bilstm: float32 LSTM under CPU autocast
                with ctx:
                    out = model.rnn(x)[0]
            else:
                out = run_bilstm(model.rnn, x, lengths, model.lstm_impl)
            h = out[:, 1:-1]
            h0, h1 = h[:n], h[n:]
        mlm = 0.0
        for h_, p, t in ((h0, p0, t0), (h1, p1, t1)):
            lp = model.mlm_logprobs(h_, p.to(device))
            mlm = mlm + F.nll_loss(lp.float().flatten(0, 1), t.to(device).flatten()) / 2
        z0, z1 = model.project(h0), model.project(h1)
        len0, len1 = l0.to(device), l1.to(device)
        score = ssa_loop(z0.float(), len0, z1.float(), len1) if mode == "reference" else \
            model.ssa_score(z0, len0, z1, len1)
        sfp = F.binary_cross_entropy_with_logits(model.ordinal_logits(score), labels)
        loss = 0.7 * mlm + 0.3 * sfp
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def tfm_step(model, opt, batch, labels, device, bf16, max_len=512):
    (s0, _, _, _), (s1, _, _, _) = batch
    rows = [tfm_pair_input(a.numpy(), b.numpy(), max_len) for a, b in zip(s0, s1, strict=True)]
    keep = max(int(r[2].sum()) for r in rows)  # pad to the longest pair, not to max_len
    tokens, segs, mask = (torch.as_tensor(np.stack(c)[:, :keep]).to(device) for c in zip(*rows, strict=True))
    g = torch.Generator().manual_seed(0)
    n_pred = min(int(0.15 * max_len), int(mask.sum(1).min()) - 1)
    pos = torch.stack([torch.randperm(int(m.sum()) - 1, generator=g)[:n_pred] + 1 for m in mask.cpu()])
    pos = pos.to(device)
    with autocast(device, "bf16" if bf16 else "fp32"):
        h = model(tokens, segs, mask)
        lp = model.mlm_logprobs(h, pos)
        mlm = F.nll_loss(lp.float().flatten(0, 1), tokens.gather(1, pos).flatten())
        cls = F.cross_entropy(model.cls_logits(h).float(), labels[:, 0].long())
        loss = 0.7 * mlm + 0.3 * cls
    opt.zero_grad(set_to_none=True)
    loss.backward()
    torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
    opt.step()


def timed(step, batches, warmup, device):
    times = []
    for i, b in enumerate(batches):
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        step(b)
        if device.type == "cuda":
            torch.cuda.synchronize()
        if i >= warmup:
            times.append(time.perf_counter() - t)
    return sum(times)


def ssa_memory(device, threads):
    out = subprocess.run([sys.executable, "-c", SSA_MEMORY_CHILD, device.type, str(threads)],
                         capture_output=True, text=True, check=True).stdout.split()
    base, peak, cuda = float(out[0]), float(out[1]), out[2]
    return {"ssa_32x1000_peak_rss_mb": round(peak), "ssa_32x1000_rss_increase_mb": round(peak - base),
            "ssa_32x1000_cuda_peak_mb": None if cuda == "None" else round(float(cuda))}


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--model", choices=["base", "large", "tfm"], default="base")
    p.add_argument("--bf16", action="store_true", help="precision: bf16 autocast (SSA, CPU LSTMs: float32)")
    p.add_argument("--ssa-memory", action="store_true", help="also measure SSA fwd+bwd, 32 pairs x 1000")
    p.add_argument("--steps", type=int, default=2, help="timed steps per implementation")
    p.add_argument("--warmup", type=int, default=1, help="untimed steps before each implementation's timing")
    p.add_argument("--no-reference", action="store_true", help="skip the slow reference-style run")
    p.add_argument("--pairs", type=int, default=32)
    p.add_argument("--minlen", type=int, default=200)
    p.add_argument("--maxlen", type=int, default=300)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--tuned-allocator", action="store_true",
                   help="rerun with the `plus` command's GLIBC_TUNABLES (unless GLIBC_TUNABLES is set)")
    args = p.parse_args()
    if args.tuned_allocator:  # the `plus` command's setting for this model's family
        tune_allocator(sys.argv, family_tunables("tfm" if args.model == "tfm" else "rnn"))
    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    g = torch.Generator().manual_seed(0)
    batches = [make_batch(args, g, device) for _ in range(args.warmup + args.steps)]
    tokens = sum(int(s[1].sum()) for b, _ in batches[args.warmup :] for s in b)
    res = {"model": args.model, "device": str(device), "bf16": args.bf16, "threads": args.threads,
           "glibc_tunables": os.environ.get("GLIBC_TUNABLES"),
           "pairs": args.pairs, "lens": f"U[{args.minlen},{args.maxlen}]", "steps": args.steps}

    torch.manual_seed(0)
    if args.model == "tfm":
        model = PlusTFM().to(device)
        opt = torch.optim.Adam(model.parameters(), lr=1e-4)
        t = timed(lambda b: tfm_step(model, opt, b[0], b[1], device, args.bf16), batches, args.warmup, device)
        res.update(ours_tokens_per_s=round(tokens / t, 1), reference_style_tokens_per_s=None, speedup=None,
                   padded_lstm_bound_tokens_per_s=None)
    else:
        hidden = 512 if args.model == "base" else 1024
        model = PlusRNN(hidden_dim=hidden).to(device)
        init = {k: v.clone() for k, v in model.state_dict().items()}
        rates = {}
        # the reference-style step runs first, in the fresh process the reference code gets, with the same
        # warm-up: its steady state after the warm-up is the slow one (spec reference_throughput.md, table A)
        for mode in (() if args.no_reference else ("reference",)) + ("ours", "bound"):
            model.load_state_dict(init)
            model.lstm_impl = "packed" if mode == "reference" else "auto"
            opt = torch.optim.Adam(model.parameters(), lr=1e-3)
            t = timed(lambda b, mode=mode, opt=opt: rnn_step(model, opt, b[0], b[1], mode, device, args.bf16),
                      batches, args.warmup, device)
            rates[mode] = tokens / t
        ref = rates.get("reference")
        res.update(ours_tokens_per_s=round(rates["ours"], 1),
                   reference_style_tokens_per_s=None if ref is None else round(ref, 1),
                   speedup=None if ref is None else round(rates["ours"] / ref, 2),
                   padded_lstm_bound_tokens_per_s=round(rates["bound"], 1),
                   ours_vs_bound=round(rates["bound"] / rates["ours"], 3))
    res["peak_rss_mb"] = round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)
    if device.type == "cuda":
        res["cuda_peak_mb"] = round(torch.cuda.max_memory_allocated() / 2**20)
    if args.ssa_memory:
        res.update(ssa_memory(device, args.threads))
    print(json.dumps(res), flush=True)


if __name__ == "__main__":
    main()
