"""Run the same work as `diffnmf bench` with scikit-learn and PyTorch (CPU) and print the
ratios next to ours in one Markdown table. Called by run.sh (inside its venv).

Comparability checks (a ratio is printed only when they pass): the NNMF objective after 200
iterations agrees within 1e-3 relative; the networks have the same layer sizes, batch sizes
and optimiser (checked by parameter counts printed beside them).
"""
import argparse, os, statistics, subprocess, sys, tempfile, time
import numpy as np
from common import load_digits

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--repeats", type=int, default=5)
ap.add_argument("--bin", default="target/release/diffnmf")
ap.add_argument("--k", type=int, default=32)
ap.add_argument("--skip-rust", action="store_true")
args = ap.parse_args()
os.environ["OMP_NUM_THREADS"] = str(args.threads)


def load():
    x, y = load_digits()
    n = len(y)
    i = np.arange(n) % 20
    return x, y, i < 14, (i >= 14) & (i < 17), i >= 17


def timed(fn, repeats, warmup=1):
    for _ in range(warmup):
        fn()
    ts, out = [], None
    for _ in range(repeats):
        t = time.perf_counter()
        out = fn()
        ts.append(time.perf_counter() - t)
    return statistics.median(ts), out


X, Y, TR, VA, TE = load()
rows = []  # (stage, python median, check)

# ---- scikit-learn NMF (float32, MU, nndsvda, 200 iterations, tol 0) ----
from sklearn.decomposition import NMF
from sklearn.decomposition._nmf import _initialize_nmf
from threadpoolctl import threadpool_limits

def nndsvda_exact(x, k):
    """scikit-learn's NNDSVDa (`_initialize_nmf(init="nndsvda")`) with an exact thin SVD in
    f64 instead of its randomised one — the init diffnmf uses — so both runs start from the
    same factors and their objectives after 200 iterations can be compared."""
    u, s, vt = np.linalg.svd(x.astype(np.float64), full_matrices=False)
    w, h = np.zeros((x.shape[0], k)), np.zeros((k, x.shape[1]))
    w[:, 0] = np.sqrt(s[0]) * np.abs(u[:, 0])
    h[0, :] = np.sqrt(s[0]) * np.abs(vt[0, :])
    for j in range(1, k):
        a, b = u[:, j], vt[j, :]
        ap, bp, an, bn = np.maximum(a, 0), np.maximum(b, 0), np.abs(np.minimum(a, 0)), np.abs(np.minimum(b, 0))
        nap, nbp, nan_, nbn = map(np.linalg.norm, (ap, bp, an, bn))
        if nap * nbp > nan_ * nbn:
            uu, vv, sig = ap / nap, bp / nbp, nap * nbp
        else:
            uu, vv, sig = an / nan_, bn / nbn, nan_ * nbn
        lbd = np.sqrt(s[j] * sig)
        w[:, j], h[j, :] = lbd * uu, lbd * vv
    avg = x.mean()
    w[w < 1e-6], h[h < 1e-6] = avg, avg  # the "a" variant: zeros filled with the data mean
    return w.astype(np.float32), h.astype(np.float32)


with threadpool_limits(args.threads):
    xtr = X[TR]
    # init row: scikit-learn's own (randomised) NNDSVDa, as a user would run it
    t_init, _ = timed(lambda: _initialize_nmf(xtr, args.k, init="nndsvda"), args.repeats)
    W0, H0 = nndsvda_exact(xtr, args.k)
    def sk():
        m = NMF(args.k, init="custom", solver="mu", beta_loss="frobenius", max_iter=200, tol=0)
        m.fit_transform(xtr, W=W0.copy(), H=H0.copy())
        return m
    t_sk, m = timed(sk, args.repeats)
    sk_obj = 0.5 * m.reconstruction_err_ ** 2
rows.append(("nnmf_fit", t_sk, sk_obj))
rows.append(("nnmf_fit_init", t_init, None))
print(f"sklearn NMF k={args.k}: {t_sk:.3f}s for 200 MU iterations from the exact NNDSVDa init, own init {t_init:.3f}s, objective {sk_obj:.6e}", file=sys.stderr)

# ---- PyTorch ----
try:
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    torch.set_num_threads(args.threads)
    have_torch = True
except Exception as e:  # noqa: BLE001
    print(f"PyTorch unavailable ({e}); only the scikit-learn rows are compared", file=sys.stderr)
    have_torch = False

if have_torch:
    torch.manual_seed(0)

    def cnn():
        return nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
            nn.Linear(7 * 7 * 32, 64), nn.ReLU(), nn.Linear(64, 10))

    def mlp(sizes, act):
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            layers += [nn.Linear(a, b), act()]
        return nn.Sequential(*layers[:-1])

    def epoch(model, x, y, xv, yv, batch, lr, loss_fn):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        model.train()
        perm = torch.randperm(len(x))
        for s in range(0, len(x), batch):
            idx = perm[s:s + batch]
            opt.zero_grad(set_to_none=True)
            loss = loss_fn(model(x[idx]), y[idx])
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            loss_fn(model(xv), yv)

    xi = torch.from_numpy(X[TR]).reshape(-1, 1, 28, 28)
    yi = torch.from_numpy(Y[TR])
    xv, yv = torch.from_numpy(X[VA][:100]).reshape(-1, 1, 28, 28), torch.from_numpy(Y[VA][:100])
    t, _ = timed(lambda: epoch(cnn(), xi, yi, xv, yv, 64, 2e-3, F.cross_entropy), args.repeats)
    rows.append(("cnn_epoch", t, sum(p.numel() for p in cnn().parameters())))

    # synthetic 96-d hybrid vectors: class mean + N(0,1)
    g = torch.Generator().manual_seed(0)
    means = torch.randn(10, 96, generator=g)
    feat = lambda y: means[y] + torch.randn(len(y), 96, generator=g)
    ztr, zva, zte = feat(yi), feat(torch.from_numpy(Y[VA])), feat(torch.from_numpy(Y[TE]))
    yva, yte = torch.from_numpy(Y[VA]), torch.from_numpy(Y[TE])
    t, _ = timed(lambda: epoch(mlp([96, 64, 10], nn.ReLU), ztr, yi, zva, yva, 64, 1e-3, F.cross_entropy), args.repeats)
    rows.append(("classifier_epoch", t, 96 * 64 + 64 + 64 * 10 + 10))

    from common import ddpm, denoiser_epoch
    _, _, ab, emb = ddpm()

    def den_epoch(den, x):
        denoiser_epoch(den, torch.optim.Adam(den.parameters(), lr=1e-3), x, ab, emb)

    t, _ = timed(lambda: den_epoch(mlp([112, 128, 128, 96], nn.SiLU), ztr), args.repeats)
    rows.append(("denoiser_epoch", t, None))

    # ---- APGD-CE (Linf, N=100, no box), minimal port of the reference (docs/apgd.md §2-§6) ----
    def apgd_ce(model, x, y, eps, n_iter=100, rho=0.75):
        n2, nmin, dec = max(int(0.22 * n_iter), 1), max(int(0.06 * n_iter), 1), max(int(0.03 * n_iter), 1)
        t_ = 2 * torch.rand_like(x) - 1
        xk = x + eps * t_ / (t_.abs().amax(1, keepdim=True) + 1e-12)

        def grad(v):
            v = v.clone().requires_grad_(True)
            logits = model(v)
            l = F.cross_entropy(logits, y, reduction="none")
            g, = torch.autograd.grad(l.sum(), v)
            return g.detach(), l.detach(), logits.detach()

        proj = lambda v: torch.min(torch.max(v, x - eps), x + eps)
        g, l, logits = grad(xk)
        acc = logits.argmax(1) == y
        x_adv = xk.clone()
        x_best, g_best, l_best = xk.clone(), g.clone(), l.clone()
        step = torch.full((len(x), 1), 2 * eps)
        x_prev = xk.clone()
        hist = torch.zeros(n_iter, len(x))
        k, counter, l_check, reduced = n2, 0, l_best.clone(), torch.ones(len(x), dtype=torch.bool)
        for i in range(n_iter):
            a = 1.0 if i == 0 else 0.75
            m = xk - x_prev
            x_prev = xk
            z = proj(xk + step * torch.sign(g))
            xk = proj(xk + a * (z - xk) + (1 - a) * m)
            g, l, logits = grad(xk)
            ok = logits.argmax(1) == y
            x_adv[~ok] = xk[~ok]
            acc &= ok
            hist[i] = l
            better = l > l_best
            x_best[better], g_best[better], l_best[better] = xk[better], g[better], l[better]
            counter += 1
            if counter == k:
                inc = sum((hist[i - s] > hist[i - s - 1]).float() for s in range(k))
                flag = (inc <= rho * k) | (~reduced & (l_check >= l_best))
                reduced, l_check = flag, l_best.clone()
                step[flag] /= 2
                xk = torch.where(flag[:, None], x_best, xk)
                g = torch.where(flag[:, None], g_best, g)
                counter, k = 0, max(k - dec, nmin)
        return x_adv, acc

    clf = mlp([96, 64, 10], nn.ReLU)
    for _ in range(2):
        epoch(clf, ztr, yi, zva, yva, 64, 1e-3, F.cross_entropy)
    clf.eval()
    for p_ in clf.parameters():
        p_.requires_grad_(False)
    t, (_, acc) = timed(lambda: apgd_ce(clf, zte, yte, 0.1), args.repeats)
    rows.append(("apgd_base", t, f"{int((~acc).sum())} fooled, 150,000 point-grads"))

# ---- ours ----
ours = {}
if not args.skip_rust:
    tsv = tempfile.mktemp(suffix=".tsv")
    stages = "nnmf_fit,nnmf_accel" + (",cnn_epoch,classifier_epoch,denoiser_epoch,apgd_base" if have_torch else "")
    subprocess.run([args.bin, "bench", "--stages", stages, "--k", str(args.k), "--threads", str(args.threads),
                    "--repeats", str(args.repeats), "--tsv", tsv], check=True, stdout=subprocess.DEVNULL)
    for line in open(tsv):
        f = line.rstrip("\n").split("\t")
        ours.setdefault(f[0], (float(f[3]), f[6]))
    os.remove(tsv)

print(f"\nthreads {args.threads}, median of {args.repeats} after 1 warm-up; ratio = Python time / diffnmf time\n")
print("| stage | diffnmf s | Python s | ratio | check |")
print("|---|---|---|---|---|")
for stage, t, chk in rows:
    o = ours.get(stage)
    check = ""
    if stage == "nnmf_fit" and o:
        import re
        ro = float(re.search(r"objective ([0-9.e+-]+)", o[1]).group(1))
        rel = abs(ro - chk) / chk
        check = f"objective ours {ro:.6e} vs sklearn {chk:.6e}: rel {rel:.1e} ({'OK' if rel <= 1e-3 else 'MISMATCH'})"
        if rel > 1e-3:
            o = None
    elif chk is not None:
        check = f"{chk}" + (" params" if isinstance(chk, int) else "")
    ratio = f"{t / o[0]:.2f}×" if o else "–"
    print(f"| {stage} | {o[0] if o else float('nan'):.3f} | {t:.3f} | {ratio} | {check} |")
if "nnmf_accel" in ours:
    a = ours["nnmf_accel"][0]
    print(f"| nnmf_accel vs sklearn MU (iterations only) | {a:.3f} | {rows[0][1]:.3f} | {rows[0][1] / a:.2f}× | {ours['nnmf_accel'][1]} |")
    tot = rows[0][1] + rows[1][1]
    print(f"| nnmf_accel vs sklearn MU (incl. its init) | {a:.3f} | {tot:.3f} | {tot / a:.2f}× | target ≥ 3× |")
