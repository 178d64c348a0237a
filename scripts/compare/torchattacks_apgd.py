"""Adaptive-attack gradient throughput side by side: torchattacks' APGD with EOT against the
feature-space defence (PyTorch, CPU), and `diffnmf bench --stages apgd_adaptive` on the same
architecture, points, budget and threads. Called by torchattacks.sh (inside the venv).

Both sides: synthetic 96-d hybrid vectors (class mean + N(0, 1), as `diffnmf bench`), a
classifier MLP 96→64→10 (ReLU) and a DDPM denoiser MLP [96+16]→128→128→96 (SiLU) trained
2 epochs each, t* = 10 reverse steps of jobs/paper.yaml's schedule, APGD-CE L∞ ε = 0.1,
100 iterations, EOT 20 (fresh purification noise per draw), 1 restart. torchattacks clamps
iterates to [0, 1] and wants 4-d image batches, so its side attacks `u = (x − lo)/(hi − lo)` with ε/(hi − lo) (one
global range: the same L∞ ball). The number compared is point×draw input gradients per
second: torchattacks attacks only the points its model classifies correctly at the start,
diffnmf all of them, so the totals differ and the rates are what is comparable.
"""
import argparse
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--points", type=int, default=300)
ap.add_argument("--eot", type=int, default=20)
ap.add_argument("--steps", type=int, default=100)
ap.add_argument("--bin", default="target/release/diffnmf")
ap.add_argument("--skip-rust", action="store_true")
args = ap.parse_args()
if args.eot != 20 and not args.skip_rust:
    sys.exit("--eot: diffnmf's apgd_adaptive bench row uses EOT 20; pass --skip-rust to time other values")
os.environ["OMP_NUM_THREADS"] = str(args.threads)

import torch  # noqa: E402
import torch.nn as nn  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import torchattacks  # noqa: E402

from common import ddpm, denoiser_epoch, purify  # noqa: E402

torch.set_num_threads(args.threads)
torch.manual_seed(0)
rng = np.random.default_rng(0)
means = rng.standard_normal((10, 96)).astype(np.float32)


def features(n):
    y = np.arange(n) % 10
    return torch.from_numpy(means[y] + rng.standard_normal((n, 96)).astype(np.float32)), torch.from_numpy(y)


x_tr, y_tr = features(7000)
x_te, y_te = features(args.points)

clf = nn.Sequential(nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 10))
opt = torch.optim.Adam(clf.parameters(), lr=1e-3)
for _ in range(2):
    perm = torch.randperm(len(x_tr))
    for s in range(0, len(x_tr), 64):
        b = perm[s:s + 64]
        opt.zero_grad(set_to_none=True)
        F.cross_entropy(clf(x_tr[b]), y_tr[b]).backward()
        opt.step()
betas, alphas, ab, emb = ddpm()
den = nn.Sequential(nn.Linear(112, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 96))
opt = torch.optim.Adam(den.parameters(), lr=1e-3)
for _ in range(2):
    denoiser_epoch(den, opt, x_tr, ab, emb)
for p in list(clf.parameters()) + list(den.parameters()):
    p.requires_grad_(False)

T_STAR = 10
lo, hi = float(x_te.min()) - 1.0, float(x_te.max()) + 1.0


class Defended(nn.Module):
    """One stochastic purification pass + classifier on u ∈ [0, 1]^96 (x = lo + u·(hi − lo));
    counts the rows it differentiates through (point × draw input gradients)."""

    def __init__(self):
        super().__init__()
        self.grad_rows = 0

    def forward(self, u):
        if u.requires_grad:
            self.grad_rows += len(u)
        x = lo + u.reshape(len(u), -1) * (hi - lo)
        xt = purify(den, x, betas, alphas, ab, emb, T_STAR)
        return clf(xt)


model = Defended().eval()
# torchattacks expects image batches (N, C, H, W): each vector as a 1×1×96 "image".
u = ((x_te - lo) / (hi - lo)).reshape(-1, 1, 1, 96)
atk = torchattacks.APGD(model, norm="Linf", eps=0.1 / (hi - lo), steps=args.steps, n_restarts=1,
                        seed=0, loss="ce", eot_iter=args.eot, rho=0.75)
t0 = time.perf_counter()
adv = atk(u, y_te)
t_py = time.perf_counter() - t0
grads_py = model.grad_rows
with torch.no_grad():
    fooled = int((model(adv).argmax(1) != y_te).sum())
rate_py = grads_py / t_py
print(f"torchattacks {torchattacks.__version__} APGD-CE EOT {args.eot}, torch {torch.__version__}, "
      f"{args.threads} threads: {t_py:.2f} s, {grads_py} point×draw gradients, {rate_py:,.0f}/s, "
      f"{fooled}/{args.points} misclassified after (one noisy pass)", file=sys.stderr)

print(f"threads {args.threads}, {args.points} points, {args.steps} iterations, EOT {args.eot}, ε = 0.1\n")
print("| attack | s | point×draw gradients | gradients/s |")
print("|---|---|---|---|")
print(f"| torchattacks APGD (EOT {args.eot}) | {t_py:.2f} | {grads_py:,} | {rate_py:,.0f} |")
if not args.skip_rust:
    tsv = tempfile.mktemp(suffix=".tsv")
    subprocess.run([args.bin, "bench", "--stages", "apgd_adaptive", "--adaptive-points", str(args.points),
                    "--threads", str(args.threads), "--repeats", "1", "--tsv", tsv],
                   check=True, stdout=subprocess.DEVNULL)
    row = [line.rstrip("\n").split("\t") for line in open(tsv) if line.startswith("apgd_adaptive\t")][0]
    os.remove(tsv)
    t_rs = float(row[3])
    grads_rs = int(row[-1].split(" point×draw gradients")[0].split()[-1])
    rate_rs = grads_rs / t_rs
    print(f"| diffnmf apgd_adaptive (EOT 20) | {t_rs:.2f} | {grads_rs:,} | {rate_rs:,.0f} |")
    print(f"\nratio (diffnmf / torchattacks gradients per second): **{rate_rs / rate_py:.2f}×**")
