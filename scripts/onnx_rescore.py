#!/usr/bin/env python3
"""Re-score a diffnmf run's clean test accuracy from its ONNX export, with onnxruntime + NumPy.

    diffnmf export results/paper --onnx out/onnx
    pip install onnxruntime numpy          # once; not needed by diffnmf itself
    python3 scripts/onnx_rescore.py out/onnx [--defended] [--seed 0]

Reads `pipeline.json` and the `.npy` files written by `diffnmf export`, builds the hybrid
vector exactly as `pipeline.json` describes it (cnn.onnx `features`, the NNMF projection of
the flattened image on `nnmf.basis`, z-scored with `zscore_mean`/`zscore_std`, in
`feature_order`), classifies it with classifier.onnx and prints the clean accuracy and the
agreement of its predicted classes with the run's own (`reference_clean_base_proba.npy`, from
result.h5). With `--defended` it also purifies with denoiser.onnx (R passes, `t_star` steps);
that path is stochastic (NumPy's noise is not diffnmf's), so it is compared on accuracy
only. Exits non-zero when an undefended prediction disagrees with the run's.
"""

import argparse
import json
import os
import sys

import numpy as np

try:
    import onnxruntime as ort
except ImportError:  # pragma: no cover - the message is the point
    sys.exit("onnx_rescore.py needs onnxruntime: pip install onnxruntime numpy")

TINY = np.finfo(np.float32).tiny  # entries below the smallest normal float32 become 0


def project(v, nn):
    """NNMF coefficients of the rows of v (n x p) on the fixed basis W (K x p), row by row
    independent, as pipeline.json's nnmf.algorithm states."""
    w = np.asarray(nn["basis"], dtype=np.float32)
    eps = np.float32(nn["eps"])
    max_iter, tol, every = nn["max_iter"], nn["tol"], nn["check_every"]
    v = v.astype(np.float32)
    n = v.shape[0]
    kl = nn["loss"] == "kl"
    if kl:
        s = w.sum(axis=1)
        stot = float(s.astype(np.float64).sum())
        alpha = v.astype(np.float64).sum(axis=1) / stot if stot > 0 else np.zeros(n)
    else:
        g = w @ w.T
        b = v @ w.T
        gsum = float(g.astype(np.float64).sum())
        alpha = np.maximum(b.astype(np.float64).sum(axis=1) / gsum, 0.0) if gsum > 0 else np.zeros(n)
        vn = (v.astype(np.float64) ** 2).sum(axis=1)
    h = np.repeat(alpha.astype(np.float32)[:, None], w.shape[0], axis=1)
    active = np.ones(n, dtype=bool)
    last = np.zeros(n)
    for t in range(max_iter + 1):
        if kl:
            wh = h @ w
            v64, wh64 = v.astype(np.float64), wh.astype(np.float64)
            with np.errstate(divide="ignore", invalid="ignore"):
                term = np.where(v64 > 0, v64 * np.log(v64 / (wh64 + nn["eps"])) - v64, 0.0)
            obj = np.maximum(term.sum(axis=1) + wh64.sum(axis=1), 0.0)
        else:
            hg = h @ g
            h64 = h.astype(np.float64)
            obj = np.maximum(
                0.5 * (vn - 2 * (h64 * b).sum(axis=1) + (h64 * hg).sum(axis=1)), 0.0
            )
        if not np.isfinite(obj).all():
            sys.exit(f"NNMF projection: non-finite objective at iteration {t}")
        if t == 0:
            last = obj
        elif tol > 0 and t % every == 0:
            rel = np.where(last > 0, (last - obj) / np.where(last > 0, last, 1.0), 0.0)
            last = np.where(active, obj, last)
            active &= ~(rel < tol)
        if t == max_iter or not active.any():
            break
        if kl:
            num = (v / (wh + eps)) @ w.T
            new = h * num / (s + eps)
        else:
            new = h * b / (hg + eps)
        new = np.where(new < TINY, np.float32(0), new).astype(np.float32)
        h = np.where(active[:, None], new, h)
    return h


def softmax(z):
    z = z - z.max(axis=1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=1, keepdims=True)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("export_dir", help="folder written by `diffnmf export RUN --onnx DIR`")
    ap.add_argument("--defended", action="store_true", help="also score the purified (defended) model")
    ap.add_argument("--seed", type=int, default=0, help="NumPy seed of the purification noise")
    a = ap.parse_args()
    d = a.export_dir
    with open(os.path.join(d, "pipeline.json")) as f:
        p = json.load(f)
    if p.get("format") != "diffnmf-onnx-pipeline" or p.get("version") != 1:
        sys.exit(f"{d}/pipeline.json: format {p.get('format')!r} version {p.get('version')!r}; this script reads version 1")
    files = p["files"]
    load = lambda k: np.load(os.path.join(d, files[k]))
    sess = lambda k: ort.InferenceSession(os.path.join(d, files[k]), providers=["CPUExecutionProvider"])
    images = load("eval_images").astype(np.float32)  # [n, 1, H, W], pixels in [0, 1]
    labels = load("eval_labels")
    blocks = {}
    if files.get("cnn"):
        blocks["cnn"] = sess("cnn").run(["features"], {"image": images})[0]
    if p.get("nnmf"):
        blocks["nnmf"] = project(images.reshape(len(images), -1), p["nnmf"])
    hybrid = np.concatenate([blocks[b["name"]] for b in p["feature_order"]], axis=1)
    z = ((hybrid - np.asarray(p["zscore_mean"], np.float32)) / np.asarray(p["zscore_std"], np.float32)).astype(np.float32)
    clf = sess("classifier")
    logits = clf.run(["logits"], {"z": z})[0]
    pred = logits.argmax(axis=1)
    acc = float((pred == labels).mean())
    print(f"points: {len(labels)}   clean_base accuracy (onnxruntime): {acc:.4f}")
    status = 0
    if files.get("reference_clean_base_proba"):
        ref = load("reference_clean_base_proba")
        agree = pred == ref.argmax(axis=1)
        dp = float(np.abs(softmax(logits.astype(np.float64)) - ref).max())
        print(f"agreement with the run's clean_base predictions: {int(agree.sum())}/{len(agree)}   max |proba diff|: {dp:.2e}")
        if not agree.all():
            print(f"disagreeing points (eval ids): {load('eval_ids')[~agree].tolist()}")
            status = 1
    if a.defended:
        sc = p["schedule"]
        beta, abar, sigma = (np.asarray(sc[k], np.float64) for k in ("beta", "alpha_bar", "sigma"))
        den = sess("denoiser")
        out_name = den.get_outputs()[0].name
        rng = np.random.default_rng(a.seed)
        ts, probs = sc["t_star"], 0.0
        for _ in range(sc["passes"]):
            x = np.sqrt(abar[ts]) * z + np.sqrt(1 - abar[ts]) * rng.standard_normal(z.shape)
            for s in range(ts, 0, -1):
                o = den.run([out_name], {"x_t": x.astype(np.float32), "t": np.full(len(z), s, np.int64)})[0]
                al = 1 - beta[s]
                if sc["prediction"] == "noise":
                    x = (x - beta[s] / np.sqrt(1 - abar[s]) * o) / np.sqrt(al)
                else:
                    x = (np.sqrt(al) * (1 - abar[s - 1]) * x + np.sqrt(abar[s - 1]) * beta[s] * o) / (1 - abar[s])
                if s > 1:
                    x = x + sigma[s] * rng.standard_normal(z.shape)
            probs = probs + softmax(clf.run(["logits"], {"z": x.astype(np.float32)})[0].astype(np.float64))
        dacc = float((probs.argmax(axis=1) == labels).mean())
        line = f"clean_def accuracy (onnxruntime, R={sc['passes']}, t*={ts}, numpy seed {a.seed}): {dacc:.4f}"
        if files.get("reference_clean_def_proba"):
            rd = load("reference_clean_def_proba")
            line += f"   (the run: {float((rd.argmax(axis=1) == labels).mean()):.4f})"
        print(line)
    sys.exit(status)


if __name__ == "__main__":
    main()
