"""Pieces shared by compare.py (one stage at a time) and pipeline.py (the whole experiment):
the embedded digits, the DDPM schedule and timestep embedding of jobs/paper.yaml, and one
denoiser training epoch (epsilon prediction, MSE). PyTorch is imported only where needed
(compare.py also runs without it)."""
import gzip

import numpy as np


def load_digits():
    """The embedded 10,000 digits: images (n × 784 float32 in [0, 1]) and labels."""
    with gzip.open("data/digits-images-idx3-ubyte.gz") as f:
        raw = f.read()
    n = int.from_bytes(raw[4:8], "big")
    x = np.frombuffer(raw, np.uint8, offset=16).reshape(n, 784).astype(np.float32) / 255.0
    with gzip.open("data/digits-labels-idx1-ubyte.gz") as f:
        y = np.frombuffer(f.read(), np.uint8, offset=8).astype(np.int64)
    return x, y


def ddpm(steps=100, beta_start=1e-4, beta_end=0.02, time_dim=16):
    """(betas, alphas, alpha_bar, emb) with emb[t-1] the sinusoidal embedding of t = 1..T."""
    import torch
    betas = torch.linspace(beta_start, beta_end, steps)
    alphas = 1 - betas
    ab = torch.cumprod(alphas, 0)
    half = time_dim // 2
    freqs = torch.exp(-np.log(10000.0) * torch.arange(half) / half)
    t = torch.arange(1, steps + 1)[:, None]
    emb = torch.cat([torch.sin(t * freqs), torch.cos(t * freqs)], 1)
    return betas, alphas, ab, emb


def denoiser_epoch(den, opt, x, ab, emb, batch=128):
    """One epoch of DDPM training: noise each row to a random step, regress the noise."""
    import torch
    import torch.nn.functional as F
    perm = torch.randperm(len(x))
    for s in range(0, len(x), batch):
        xb = x[perm[s:s + batch]]
        t_ = torch.randint(0, len(ab), (len(xb),))
        noise = torch.randn_like(xb)
        a = ab[t_][:, None]
        xt = a.sqrt() * xb + (1 - a).sqrt() * noise
        opt.zero_grad(set_to_none=True)
        F.mse_loss(den(torch.cat([xt, emb[t_]], 1)), noise).backward()
        opt.step()


def purify(den, x, betas, alphas, ab, emb, t_star):
    """One stochastic pass per row of the defence: noise to t*, then t* ancestral reverse
    steps (epsilon prediction; no noise at the last step), as diffnmf's defended model."""
    import torch
    a = ab[t_star - 1]
    xt = a.sqrt() * x + (1 - a).sqrt() * torch.randn_like(x)
    for t in range(t_star, 0, -1):
        e = den(torch.cat([xt, emb[t - 1].expand(len(xt), -1)], 1))
        mean = (xt - betas[t - 1] / (1 - ab[t - 1]).sqrt() * e) / alphas[t - 1].sqrt()
        if t > 1:
            var = betas[t - 1] * (1 - ab[t - 2]) / (1 - ab[t - 1])
            xt = mean + var.sqrt() * torch.randn_like(x)
        else:
            xt = mean
    return xt
