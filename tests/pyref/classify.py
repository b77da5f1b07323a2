"""Reference for gantry's classification task, in PyTorch/numpy/scikit-learn, float64.

Input npz `case`:
- 0 (loss): the `small` backbone's weights (gantry's names), x in [0, 1], y, lam, perm, noise,
  head (0 linear, 1 orthogonal), mode (0 ce, 1 mixup, 2 adaptivemix), sigma, weight. Transcribes
  docs/adaptivemix.md "Classifier use" with the reference's three embed passes; returns the loss
  and the gradient of every weight (`grad.<name>`).
- 1 (attack): weights, x, y, start, eps, step, steps, norm (0 linf, 1 l2), random_start; the
  adversarial batch of FGSM/PGD (torchattacks' update and projection) with the given start.
- 2 (ood): pos, neg score vectors; sklearn's AUROC, AUPR-in/out, FPR95 and detection error from
  roc_curve(drop_intermediate=False); and feats, labels, test feats: the principal-direction
  score from numpy's SVD.
"""
import sys
import numpy as np
import torch
import torch.nn.functional as F

t = {k: torch.from_numpy(v) for k, v in np.load(sys.argv[1]).items()}
case = int(t["case"])
out = {}


def small_net(w, head):
    def embed(x01, train):
        h = (x01 - 0.5) / 0.5
        for i in range(3):
            p = f"trunk.block{i}."
            h = F.conv2d(h, w[p + "conv.weight"], w[p + "conv.bias"], padding=1)
            h = F.batch_norm(h, w[p + "bn.running_mean"].clone(), w[p + "bn.running_var"].clone(),
                             w[p + "bn.weight"], w[p + "bn.bias"], training=train, eps=1e-5)
            h = F.max_pool2d(F.relu(h), 2)
        f = F.relu(F.linear(h.mean((2, 3)), w["trunk.feature.weight"], w["trunk.feature.bias"]))
        return F.normalize(f, dim=1) if head == 1 else f

    def head_fn(f):
        if head == 1:
            return (f @ w["head.weight"].t()).abs()
        return F.linear(f, w["head.weight"], w["head.bias"])

    return embed, head_fn


def weights():
    names = [k[2:] for k in t if k.startswith("w.")]
    return {n: t["w." + n].clone().requires_grad_(not ("running" in n or (n == "head.weight" and int(t["head"]) == 1)))
            for n in names}


if case == 0:
    w = weights()
    embed, head = small_net(w, int(t["head"]))
    x, y = t["x"], t["y"].long()
    lam, perm, mode = t["lam"], t["perm"].long(), int(t["mode"])
    if mode == 0:
        loss = F.cross_entropy(head(embed(x, True)), y)
    elif mode == 1:
        logits = head(embed(lam * x + (1 - lam) * x[perm], True))
        loss = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[perm])
    else:
        e_mix = embed(lam * x + (1 - lam) * x[perm], True)
        f, f_perm = embed(x, True), embed(x[perm], True)
        z = lam * f + (1 - lam) * f_perm
        l_am = F.mse_loss(e_mix, (z + float(t["sigma"]) * t["noise"]).detach())
        logit = head(z) + head(e_mix)
        loss = lam * F.cross_entropy(logit, y) + (1 - lam) * F.cross_entropy(logit, y[perm]) \
            + float(t["weight"]) * l_am
    loss.backward()
    out["loss"] = loss.detach().numpy()
    for n, v in w.items():
        if v.requires_grad:
            out["grad." + n] = v.grad.numpy()
elif case == 1:
    w = weights()
    embed, head = small_net(w, int(t["head"]))
    x, y = t["x"], t["y"].long()
    eps, step, steps = float(t["eps"]), float(t["step"]), int(t["steps"])
    norm = int(t["norm"])

    def project(adv):
        d = adv - x
        if norm == 0:
            d = d.clamp(-eps, eps)
        else:
            n = d.flatten(1).norm(dim=1).view(-1, 1, 1, 1)
            d = d * (eps / n.clamp_min(1e-12)).clamp(max=1.0)
        return (x + d).clamp(0, 1)

    adv = project(x + t["start"]) if int(t["random_start"]) else x.clone()
    for _ in range(steps):
        adv = adv.detach().requires_grad_(True)
        loss = F.cross_entropy(head(embed(adv, False)), y)
        g, = torch.autograd.grad(loss, adv)
        if norm == 0:
            moved = adv + step * g.sign()
        else:
            moved = adv + step * g / g.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
        adv = project(moved.detach())
    out["adv"] = adv.detach().numpy()
else:
    from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve
    pos, neg = t["pos"].numpy(), t["neg"].numpy()
    s = np.concatenate([pos, neg])
    lab = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr, _ = roc_curve(lab, s, drop_intermediate=False)
    out["auroc"] = np.array(roc_auc_score(lab, s))
    out["fpr95"] = np.array(fpr[np.argmax(tpr >= 0.95)])
    out["detection_error"] = np.array((0.5 * (1 - tpr) + 0.5 * fpr).min())
    out["aupr_in"] = np.array(average_precision_score(lab, s))
    out["aupr_out"] = np.array(average_precision_score(1 - lab, -s))
    feats, labels, test = t["feats"].numpy(), t["labels"].numpy(), t["test"].numpy()
    norm = lambda a: a / np.maximum(np.linalg.norm(a, axis=1, keepdims=True), 1e-12)
    f, q = norm(feats), norm(test)
    # Fitted on the features as given (the UoS reference's raw features), scored by angle.
    dirs = np.stack([np.linalg.svd(feats[labels == c], full_matrices=False)[2][0]
                     for c in range(int(labels.max()) + 1)])
    cos = np.clip(np.abs(q @ dirs.T), 0, 1)
    out["principal"] = -np.arccos(cos).min(1)
np.savez(sys.argv[2], **out)
