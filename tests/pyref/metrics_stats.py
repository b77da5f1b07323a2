"""Reference values for gantry-metrics' FID / KID / IS / precision-recall parity tests.

Usage: metrics_stats.py {fid,kid,is,pr,npz-write,npz-read} OUT_DIR [FILE]

Each subcommand writes its inputs (.npy) and a `<name>.json` of reference values to OUT_DIR:
  fid       pytorch-fid's calculate_frechet_distance on np.mean / np.cov statistics, including
            N < dim, identical sets, and a forced eps retry (its first sqrtm made non-finite)
  kid       torch-fidelity's kid_features_to_metric (float32, its own subsets) and a float64
            NumPy transcription of its formula on the same subsets (indices saved)
  is        torch-fidelity's isc_features_to_metric
  pr        torch-fidelity's precision/recall (metric_prc.py of torch-fidelity master, not in
            0.3.0: transcribed below) in float64 and float32
  npz-write pytorch-fid's statistics file (np.savez_compressed, as its --save-stats does)
  npz-read  FILE: prints mu/sigma of a gantry-written npz as pytorch-fid would load them
"""
import contextlib
import io
import json
import os
import sys

import numpy as np
import torch

from metrics_common import save_npy


def features(rng, n, d, shift=0.0, scale=1.0):
    # Non-negative and skewed like pool3 (an average of ReLUs).
    return (np.abs(rng.randn(n, d)) * scale + shift).astype(np.float32)


def pfid_stats(x):
    x = x.astype(np.float64)  # pytorch-fid collects activations into a float64 array
    return np.mean(x, axis=0), np.cov(x, rowvar=False)


def cmd_fid(out):
    from pytorch_fid import fid_score

    rng = np.random.RandomState(7)
    sets = {
        "a": features(rng, 700, 64),
        "b": features(rng, 600, 64, shift=0.1, scale=1.2),
        "small1": features(rng, 40, 64),
        "small2": features(rng, 50, 64, shift=0.05),
        "wide1": features(rng, 300, 256),
        "wide2": features(rng, 300, 256, scale=0.9),
    }
    for k, v in sets.items():
        save_npy(os.path.join(out, f"fid_{k}.npy"), v)
    ref = {}

    def fid(p, q):
        m1, s1 = pfid_stats(sets[p])
        m2, s2 = pfid_stats(sets[q])
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf):
            v = fid_score.calculate_frechet_distance(m1, s1, m2, s2)
        return float(v), "adding" in buf.getvalue()

    for name, (p, q) in {
        "ab": ("a", "b"),
        "small": ("small1", "small2"),
        "wide": ("wide1", "wide2"),
        "identical": ("a", "a"),
    }.items():
        ref[name], _ = fid(p, q)

    # Force pytorch-fid's retry path: its first sqrtm "fails" (non-finite), the second runs.
    real_sqrtm = fid_score.linalg.sqrtm
    calls = []

    def failing_sqrtm(a, *args, **kwargs):
        calls.append(1)
        if len(calls) == 1:
            return np.full(a.shape, np.nan), 0.0
        return real_sqrtm(a, *args, **kwargs)

    fid_score.linalg.sqrtm = failing_sqrtm
    try:
        ref["retry"], retried = fid("small1", "small2")
    finally:
        fid_score.linalg.sqrtm = real_sqrtm
    assert retried and len(calls) == 2, "the eps retry did not run"
    with open(os.path.join(out, "fid.json"), "w") as f:
        json.dump(ref, f)


def mmd2_unbiased_f64(x, y):
    """torch-fidelity's polynomial_mmd (degree 3, gamma 1/d, coef0 1, unbiased) in float64."""
    x = x.astype(np.float64)
    y = y.astype(np.float64)
    d = x.shape[1]
    k = lambda a, b: (a @ b.T / d + 1) ** 3
    kxx, kyy, kxy = k(x, x), k(y, y), k(x, y)
    m = x.shape[0]
    sxx = kxx.sum() - np.trace(kxx)
    syy = kyy.sum() - np.trace(kyy)
    return (sxx + syy) / (m * (m - 1)) - 2 * kxy.sum() / (m * m)


def cmd_kid(out):
    from torch_fidelity.metric_kid import kid_features_to_metric

    rng = np.random.RandomState(11)
    f1 = features(rng, 1100, 32)
    f2 = features(rng, 1050, 32, shift=0.05, scale=1.1)
    save_npy(os.path.join(out, "kid_f1.npy"), f1)
    save_npy(os.path.join(out, "kid_f2.npy"), f2)
    tf = kid_features_to_metric(torch.from_numpy(f1), torch.from_numpy(f2), verbose=False)
    # The subsets torch-fidelity draws (defaults: 100 x 1000, seed 2020).
    r = np.random.RandomState(2020)
    idx1, idx2, mmds = [], [], []
    for _ in range(100):
        i1 = r.choice(len(f1), 1000, replace=False)
        i2 = r.choice(len(f2), 1000, replace=False)
        idx1.append(i1)
        idx2.append(i2)
        mmds.append(mmd2_unbiased_f64(f1[i1], f2[i2]))
    save_npy(os.path.join(out, "kid_idx1.npy"), np.stack(idx1).astype(np.int64))
    save_npy(os.path.join(out, "kid_idx2.npy"), np.stack(idx2).astype(np.int64))
    ref = {
        "tf_mean": tf["kernel_inception_distance_mean"],
        "tf_std": tf["kernel_inception_distance_std"],
        "f64_mean": float(np.mean(mmds)),
        "f64_std": float(np.std(mmds)),
    }
    with open(os.path.join(out, "kid.json"), "w") as f:
        json.dump(ref, f)


def cmd_is(out):
    from torch_fidelity.metric_isc import isc_features_to_metric

    rng = np.random.RandomState(13)
    ref = {}
    for name, n in [("a", 500), ("b", 503)]:
        logits = (rng.randn(n, 1008) * 3).astype(np.float32)
        save_npy(os.path.join(out, f"is_{name}.npy"), logits)
        r = isc_features_to_metric(torch.from_numpy(logits), splits=10, shuffle=True, rng_seed=2020)
        ref[name] = [r["inception_score_mean"], r["inception_score_std"]]
    with open(os.path.join(out, "is.json"), "w") as f:
        json.dump(ref, f)


def prc_full(features_1, features_2, neighborhood=3):
    """torch-fidelity master, metric_prc.calculate_precision_recall_full (one batch)."""
    dist_nn_1 = torch.cdist(features_1, features_1).kthvalue(neighborhood + 1).values
    dist_nn_2 = torch.cdist(features_2, features_2).kthvalue(neighborhood + 1).values
    dist_2_1 = torch.cdist(features_2, features_1)
    dist_1_2 = dist_2_1.T
    precision = (dist_2_1 <= dist_nn_1).any(dim=1).float().mean().item()
    recall = (dist_1_2 <= dist_nn_2).any(dim=1).float().mean().item()
    return precision, recall


def cmd_pr(out):
    rng = np.random.RandomState(17)
    real = features(rng, 400, 16)
    fake = features(rng, 350, 16, shift=0.3, scale=0.8)
    save_npy(os.path.join(out, "pr_real.npy"), real)
    save_npy(os.path.join(out, "pr_fake.npy"), fake)
    p64, r64 = prc_full(torch.from_numpy(real).double(), torch.from_numpy(fake).double())
    p32, r32 = prc_full(torch.from_numpy(real), torch.from_numpy(fake))
    with open(os.path.join(out, "pr.json"), "w") as f:
        json.dump({"f64": [p64, r64], "f32": [p32, r32]}, f)


def cmd_npz_write(out):
    rng = np.random.RandomState(19)
    x = features(rng, 80, 16)
    save_npy(os.path.join(out, "npz_features.npy"), x)
    m, s = pfid_stats(x)
    np.savez_compressed(os.path.join(out, "pfid_stats.npz"), mu=m, sigma=s)
    np.savez(os.path.join(out, "pfid_stats_f32_fortran.npz"), mu=m.astype(np.float32),
             sigma=np.asfortranarray(s.astype(np.float32)))


def cmd_npz_read(path):
    with np.load(path) as f:
        m, s = f["mu"][:], f["sigma"][:]
        n = int(f["n"]) if "n" in f.files else None
    # Bit patterns, so the comparison is exact (decimal JSON floats may lose the last ulp).
    bits = lambda a: np.ascontiguousarray(a, dtype=np.float64).view(np.uint64).ravel().tolist()
    print(json.dumps({"dtype": [str(m.dtype), str(s.dtype)], "shape": [m.shape, s.shape],
                      "mu_bits": bits(m), "sigma_bits": bits(s), "n": n}))


def main():
    cmd, arg = sys.argv[1], sys.argv[2]
    torch.set_num_threads(max(1, os.cpu_count() or 1))
    {"fid": cmd_fid, "kid": cmd_kid, "is": cmd_is, "pr": cmd_pr, "npz-write": cmd_npz_write,
     "npz-read": cmd_npz_read}[cmd](arg)


if __name__ == "__main__":
    main()
