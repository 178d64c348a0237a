"""The whole `diffnmf run jobs/paper.yaml` experiment ported to PyTorch + scikit-learn (CPU),
timed stage by stage, and run side by side with diffnmf on the same machine and threads.

Same work as jobs/paper.yaml (defaults): embedded 10,000 digits, stratified 70/15/15 split;
CNN conv3x3(8,16,32)-BN-ReLU with max-pools, FC 64 feature layer (ReLU), FC 10, Adam 2e-3,
cosine LR over 15 epochs, batch 64, +-2 px random shifts, early stopping (patience 4, best
weights kept); scikit-learn NMF k=32 (nndsvda, solver="mu", frobenius, max_iter=200,
tol=1e-4) fit on the training images and `transform` of validation/test; hybrid vector
[CNN 64 | NNMF 32] z-scored with training statistics; MLP classifier 96-64-10 ReLU (Adam 1e-3,
batch 64, 40 epochs, patience 6); DDPM denoiser MLP [x_t | sinusoidal emb(t) 16] -128-128-96
SiLU, epsilon prediction, T=100 linear betas 1e-4..0.02, 40 epochs, batch 128; defence: noise
to t*=10, 10 ancestral reverse steps, R=10 passes, softmax averaged. Evaluation: clean base and
defended; for eps in 0.1, 0.25, 0.5, 1.0 (nested balls: a point broken at a smaller eps keeps
its example and is not attacked again): APGD-CE then APGD-DLR on the survivors (N=100, one
restart, rho=0.75, docs/apgd.md constants) on the base classifier (transfer to the defence) and
adaptively through the defence with EOT 20 (gradient averaged over draws, step-size logic on
the last draw's loss, a point leaves the active set once the draw-averaged prediction is
wrong), scored on 10 fresh passes.

Usage (inside scripts/compare/.venv, see pipeline.sh): python pipeline.py --threads 2
"""
import argparse, os, re, resource, subprocess, sys, tempfile, time
import numpy as np
from common import load_digits

ap = argparse.ArgumentParser()
ap.add_argument("--threads", type=int, default=os.cpu_count())
ap.add_argument("--bin", default="target/release/diffnmf")
ap.add_argument("--skip-rust", action="store_true")
ap.add_argument("--skip-python", action="store_true")
ap.add_argument("--seed", type=int, default=0)
ap.add_argument("--smoke", action="store_true", help="1 epoch each, 60 test points, 5 APGD iterations (checks the script runs; numbers meaningless)")
args = ap.parse_args()
EP = (1, 1, 1) if args.smoke else (15, 40, 40)  # CNN, classifier, denoiser epochs
N_ITER = 5 if args.smoke else 100
os.environ["OMP_NUM_THREADS"] = str(args.threads)

T = {}  # stage -> seconds
GRADS = {"adaptive": 0, "base": 0}  # point(×draw) input gradients computed by the attacks


def stage(name):
    class S:
        def __enter__(self):
            self.t = time.perf_counter()

        def __exit__(self, *a):
            T[name] = T.get(name, 0.0) + time.perf_counter() - self.t
            print(f"[python] {name}: {T[name]:.1f} s", file=sys.stderr, flush=True)
    return S()


def run_python():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F
    from sklearn.decomposition import NMF
    from threadpoolctl import threadpool_limits

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    rng = np.random.default_rng(args.seed)
    t_all = time.perf_counter()

    with stage("load"):
        X, Y = load_digits()
        tr, va, te = [], [], []
        for c in range(10):
            idx = rng.permutation(np.flatnonzero(Y == c))
            a, b = int(round(0.70 * len(idx))), int(round(0.85 * len(idx)))
            tr += list(idx[:a]); va += list(idx[a:b]); te += list(idx[b:])
        tr, va, te = map(np.array, (tr, va, te))
        if args.smoke:
            te = te[:60]

    # ---- CNN ----
    def make_cnn():
        feat = nn.Sequential(
            nn.Conv2d(1, 8, 3, padding=1, bias=False), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(8, 16, 3, padding=1, bias=False), nn.BatchNorm2d(16), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(16, 32, 3, padding=1, bias=False), nn.BatchNorm2d(32), nn.ReLU(), nn.Flatten(),
            nn.Linear(7 * 7 * 32, 64), nn.ReLU())
        return feat, nn.Linear(64, 10)

    def shift(x, s=2):
        b = x.shape[0]
        xp = F.pad(x, (s, s, s, s))
        dy = torch.randint(0, 2 * s + 1, (b,))
        dx = torch.randint(0, 2 * s + 1, (b,))
        ar = torch.arange(28)
        rows = (dy[:, None] + ar)[:, :, None]
        cols = (dx[:, None] + ar)[:, None, :]
        return xp[torch.arange(b)[:, None, None], 0, rows, cols].unsqueeze(1)

    def train(model, fwd, xs, ys, xv, yv, epochs, batch, lr, patience, cosine, augment=None):
        opt = torch.optim.Adam(model.parameters(), lr=lr)
        best, best_state, best_ep = float("inf"), None, 0
        for ep in range(epochs):
            if cosine:
                for g in opt.param_groups:
                    g["lr"] = lr * 0.5 * (1 + np.cos(np.pi * ep / epochs))
            model.train()
            perm = torch.randperm(len(xs))
            for s0 in range(0, len(xs), batch):
                idx = perm[s0:s0 + batch]
                xb = xs[idx] if augment is None else augment(xs[idx])
                opt.zero_grad(set_to_none=True)
                F.cross_entropy(fwd(xb), ys[idx]).backward()
                opt.step()
            model.eval()
            with torch.no_grad():
                vl = float(F.cross_entropy(fwd(xv), yv))
            if vl < best:
                best, best_ep = vl, ep
                best_state = {k: v.clone() for k, v in model.state_dict().items()}
            elif patience and ep - best_ep >= patience:
                break
        model.load_state_dict(best_state)
        model.eval()
        return best_ep + 1

    img = lambda i: torch.from_numpy(X[i]).reshape(-1, 1, 28, 28)
    lab = lambda i: torch.from_numpy(Y[i])
    with stage("cnn_train"):
        feat, head = make_cnn()
        cnn = nn.Sequential(feat, head)
        ep = train(cnn, cnn, img(tr), lab(tr), img(va), lab(va), EP[0], 64, 2e-3, 4, True, shift)
        with torch.no_grad():
            f_tr, f_va, f_te = (feat(img(i)) for i in (tr, va, te))
    print(f"[python] cnn best epoch {ep}", file=sys.stderr)

    # ---- NNMF (scikit-learn MU) ----
    with stage("nnmf_fit"), threadpool_limits(args.threads):
        nmf = NMF(32, init="nndsvda", solver="mu", beta_loss="frobenius", max_iter=200, tol=1e-4)
        h_tr = nmf.fit_transform(X[tr])
    with stage("nnmf_transform"), threadpool_limits(args.threads):
        h_va, h_te = nmf.transform(X[va]), nmf.transform(X[te])

    with stage("features"):
        hyb = lambda f, h: torch.cat([f, torch.from_numpy(h.astype(np.float32))], 1)
        z_tr, z_va, z_te = hyb(f_tr, h_tr), hyb(f_va, h_va), hyb(f_te, h_te)
        mu, sd = z_tr.mean(0), z_tr.std(0).clamp_min(1e-6)
        z_tr, z_va, z_te = ((z - mu) / sd for z in (z_tr, z_va, z_te))
        y_tr, y_va, y_te = lab(tr), lab(va), lab(te)

    with stage("classifier_train"):
        clf = nn.Sequential(nn.Linear(96, 64), nn.ReLU(), nn.Linear(64, 10))
        train(clf, clf, z_tr, y_tr, z_va, y_va, EP[1], 64, 1e-3, 6, False)
        for p in clf.parameters():
            p.requires_grad_(False)

    # ---- diffusion denoiser ----
    from common import ddpm, denoiser_epoch, purify as common_purify
    betas, alphas, ab, emb = ddpm()  # emb[t-1] for t = 1..T
    den = nn.Sequential(nn.Linear(112, 128), nn.SiLU(), nn.Linear(128, 128), nn.SiLU(), nn.Linear(128, 96))
    with stage("denoiser_train"):
        opt = torch.optim.Adam(den.parameters(), lr=1e-3)
        for _ in range(EP[2]):
            denoiser_epoch(den, opt, z_tr, ab, emb)
        for p in den.parameters():
            p.requires_grad_(False)

    t_star = 10

    def purify(x):
        """One stochastic pass per row: noise to t*, t* ancestral reverse steps."""
        return common_purify(den, x, betas, alphas, ab, emb, t_star)

    def defended_proba(x, passes=10):
        with torch.no_grad():
            xr = x.repeat_interleave(passes, 0)
            return F.softmax(clf(purify(xr)), 1).reshape(len(x), passes, 10).mean(1)

    with stage("clean_eval"):
        acc_base = float((clf(z_te).argmax(1) == y_te).float().mean())
        acc_def = float((defended_proba(z_te).argmax(1) == y_te).float().mean())
    print(f"[python] clean accuracy base {acc_base:.4f} defended {acc_def:.4f}", file=sys.stderr)

    # ---- APGD (docs/apgd.md: step 2 eps, momentum 0.75, checkpoints p_j, rho 0.75) ----
    def ce_loss(logits, y):
        return F.cross_entropy(logits, y, reduction="none")

    def dlr_loss(logits, y):
        s, _ = logits.sort(1)
        zy = logits.gather(1, y[:, None])[:, 0]
        top = logits.argmax(1) == y
        zo = torch.where(top, s[:, -2], s[:, -1])
        return -(zy - zo) / (s[:, -1] - s[:, -3] + 1e-12)

    def checkpoints(n_iter):
        p = [0, 0.22]
        while p[-1] < 1:
            p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
        return sorted({int(np.ceil(q * n_iter)) for q in p if q <= 1})

    def apgd(x, y, eps, loss_fn, eot, early_stop, n_iter=N_ITER, rho=0.75):
        """Returns (x_adv, fooled mask). eot = 0: the deterministic base classifier."""
        def evaluate(v, yy):
            GRADS["base" if eot == 0 else "adaptive"] += len(v) * max(eot, 1)
            v = v.clone().requires_grad_(True)
            if eot == 0:
                logits = clf(v)
                l = loss_fn(logits, yy)
                g, = torch.autograd.grad(l.sum(), v)
                return g, l.detach(), logits.detach().argmax(1)
            vr = v.repeat_interleave(eot, 0)
            logits = clf(purify(vr))
            l = loss_fn(logits, yy.repeat_interleave(eot)).reshape(len(v), eot)
            g, = torch.autograd.grad(l.sum() / eot, v)
            pred = F.softmax(logits.detach(), 1).reshape(len(v), eot, 10).mean(1).argmax(1)
            return g, l[:, -1].detach(), pred

        n = len(x)
        cps = set(checkpoints(n_iter))
        t0 = 2 * torch.rand_like(x) - 1
        xk = torch.clamp(x + eps * t0, x - eps, x + eps)
        g, l, pred = evaluate(xk, y)
        fooled = pred != y
        x_adv = x.clone()
        x_adv[fooled] = xk[fooled]
        active = torch.ones(n, dtype=torch.bool) if not early_stop else ~fooled
        x_best, l_best, g_best = xk.clone(), l.clone(), g.clone()
        step = torch.full((n, 1), 2.0 * eps)
        x_prev = xk.clone()
        succ = torch.zeros(n)
        l_prev_iter = l.clone()
        l_best_at_cp, step_at_cp = l_best.clone(), step.clone()
        last_cp = 0
        for k in range(n_iter):
            ids = active.nonzero()[:, 0]
            if len(ids) == 0:
                break
            a = 1.0 if k == 0 else 0.75
            xa, xp = xk[ids], x_prev[ids]
            lo, hi = x[ids] - eps, x[ids] + eps
            z = torch.min(torch.max(xa + step[ids] * g[ids].sign(), lo), hi)
            xn = torch.min(torch.max(xa + a * (z - xa) + (1 - a) * (xa - xp), lo), hi)
            x_prev[ids] = xa
            xk[ids] = xn
            gi, li, pi = evaluate(xn, y[ids])
            g[ids] = gi
            succ[ids] += (li > l_prev_iter[ids]).float()
            l_prev_iter[ids] = li
            fo = pi != y[ids]
            x_adv[ids[fo]] = xn[fo]
            fooled[ids[fo]] = True
            if early_stop:
                active[ids[fo]] = False
            better = li > l_best[ids]
            bi = ids[better]
            x_best[bi], l_best[bi], g_best[bi] = xn[better], li[better], gi[better]
            if (k + 1) in cps and (k + 1) > 0:
                h = (k + 1) - last_cp
                cond1 = succ < rho * h
                cond2 = (step == step_at_cp)[:, 0] & (l_best == l_best_at_cp)
                red = cond1 | cond2
                step[red] /= 2
                xk[red], g[red] = x_best[red], g_best[red]
                succ.zero_()
                l_best_at_cp, step_at_cp, last_cp = l_best.clone(), step.clone(), k + 1
        return x_adv, fooled

    def suite(x, y, eps, eot, early_stop):
        xa, fooled = apgd(x, y, eps, ce_loss, eot, early_stop)
        rest = (~fooled).nonzero()[:, 0]
        if len(rest):
            xd, fd = apgd(x[rest], y[rest], eps, dlr_loss, eot, early_stop)
            xa[rest[fd]] = xd[fd]
        return xa

    base_broken = clf(z_te).argmax(1) != y_te
    clean_def = defended_proba(z_te).argmax(1) != y_te
    adapt_broken = clean_def.clone()
    base_adv, adapt_adv = z_te.clone(), z_te.clone()
    for eps in (0.1, 0.25, 0.5, 1.0):
        with stage("attack_base"):
            todo = (~base_broken).nonzero()[:, 0]
            if len(todo):
                base_adv[todo] = suite(z_te[todo], y_te[todo], eps, 0, False)
            base_broken = clf(base_adv).argmax(1) != y_te
        with stage("transfer_score"):
            tr_acc = float((defended_proba(base_adv).argmax(1) == y_te).float().mean())
        with stage("attack_adaptive"):
            todo = (~adapt_broken).nonzero()[:, 0]
            if len(todo):
                adapt_adv[todo] = suite(z_te[todo], y_te[todo], eps, 20, True)
        with stage("adaptive_score"):
            adapt_broken = defended_proba(adapt_adv).argmax(1) != y_te
        print(f"[python] eps {eps}: robust accuracy base {1 - float(base_broken.float().mean()):.4f}, "
              f"transfer {tr_acc:.4f}, adaptive {1 - float(adapt_broken.float().mean()):.4f}",
              file=sys.stderr, flush=True)
    wall = time.perf_counter() - t_all
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return wall, rss


def run_rust():
    out = tempfile.mkdtemp(prefix="diffnmf-compare-")
    cmd = [args.bin, "run", "jobs/paper.yaml", "--out", out, "--threads", str(args.threads)]
    if os.path.exists("/usr/bin/time"):  # the child's own peak RSS (RUSAGE_CHILDREN would
        cmd = ["/usr/bin/time", "-v"] + cmd  # also count the forked Python)
    t = time.perf_counter()
    p = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if p.returncode != 0:
        sys.exit(f"diffnmf failed:\n{p.stderr[-3000:]}")
    m = re.search(r"Maximum resident set size \(kbytes\): (\d+)", p.stderr)
    rss = int(m.group(1)) / 1024.0 if m else float("nan")
    # point×draw gradients of the adaptive attacks, from the APGD log lines
    acc, adaptive = 0, 0
    for line in p.stderr.splitlines():
        g = re.search(r"(\d+) gradient evaluations", line)
        if g:
            acc += int(g.group(1))
        elif line.startswith("[stage] attack_adaptive"):
            adaptive, acc = adaptive + acc, 0
        elif line.startswith("[stage] attack_base"):
            acc = 0
    RUST["adaptive_grads"] = adaptive
    RUST["adaptive_s"] = sum(float(x) for x in re.findall(r"\[stage\] attack_adaptive_eps[^:]*: ([0-9.]+)s", p.stderr))
    keep = ("[stage]", "eps ", "clean")
    sys.stderr.write("\n".join(l for l in p.stderr.splitlines() if l.startswith(keep)) + "\n")
    return wall, rss


RUST = {}
py = rust = None
if not args.skip_python:
    py = run_python()
if not args.skip_rust:
    rust = run_rust()
print(f"\nthreads {args.threads}; one run each; wall time of the whole experiment\n")
print("| run | wall s | peak RSS MiB |")
print("|---|---|---|")
if py:
    print(f"| PyTorch + scikit-learn port | {py[0]:.1f} | {py[1]:.0f} |")
if rust:
    print(f"| diffnmf run jobs/paper.yaml | {rust[0]:.1f} | {rust[1]:.0f} |")
if py and rust:
    print(f"| ratio (Python / diffnmf) | {py[0] / rust[0]:.2f}× | |")
print("\nPython stages (s): " + ", ".join(f"{k} {v:.1f}" for k, v in T.items()))
print("\nAdaptive attacks, all ε (the two runs train different models, so the number of points")
print("still robust, and with it the work, differs: compare the gradient throughput)\n")
print("| run | adaptive s | point×draw gradients | gradients/s |")
print("|---|---|---|---|")
if py:
    a = T.get("attack_adaptive", float("nan"))
    print(f"| PyTorch | {a:.1f} | {GRADS['adaptive']} | {GRADS['adaptive'] / a:.0f} |")
if rust and RUST.get("adaptive_s"):
    r = RUST["adaptive_s"]
    print(f"| diffnmf | {r:.1f} | {RUST['adaptive_grads']} | {RUST['adaptive_grads'] / r:.0f} |")
