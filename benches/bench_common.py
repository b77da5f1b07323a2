"""Shared by the PyTorch twins of `gantry bench`: the options, TF32, the EMA update gantry does,
and the timing loop that prints the same JSON line as `gantry bench`."""
import argparse
import contextlib
import json
import os
import resource
import statistics
import time

import torch


# `--tf32`: TF32 in CUDA matmuls (cuBLAS) and cuDNN convolutions, as (matmul, cudnn).
#   off: both off, as `gantry bench` sets them (`train.tf32 = false`, its default);
#   on: both on (`train.tf32 = true`);
#   libtorch: libtorch's own defaults (matmul off, cuDNN on), what the gantry commands that set
#     no TF32 flags run with (`gantry classify bench`, `gantry bench` of a translation preset).
TF32 = {"off": (False, False), "on": (True, True), "libtorch": (False, True)}


def parser(batch):
    """The options every twin takes (those `scripts/bench*.sh` pass); each adds its own. `--tf32`
    defaults to $GANTRY_BENCH_TF32, else off."""
    tf32 = os.environ.get("GANTRY_BENCH_TF32") or "off"
    if tf32 not in TF32:
        raise SystemExit(f"GANTRY_BENCH_TF32 must be one of {', '.join(TF32)}, not {tf32!r}")
    p = argparse.ArgumentParser()
    p.add_argument("--threads", type=int, required=True)
    p.add_argument("--steps", type=int, default=30)
    p.add_argument("--warmup", type=int, default=5)
    p.add_argument("--batch", type=int, default=batch)
    p.add_argument("--device", default="cpu")
    p.add_argument("--what", default="pytorch")
    p.add_argument("--precision", choices=["fp32", "bf16", "fp16"], default="fp32")
    p.add_argument("--channels-last", action="store_true")
    p.add_argument("--tf32", choices=list(TF32), default=tf32,
                   help="TF32 in CUDA matmuls and cuDNN convolutions (no effect on CPU); default off as gantry bench")
    return p


def set_tf32(setting):
    """Sets TF32 in CUDA matmuls and cuDNN convolutions explicitly (`TF32[setting]`), and cuDNN's
    autotuner off as gantry's `train.cudnn_benchmark = false`; no effect on CPU."""
    matmul, cudnn = TF32[setting]
    torch.backends.cuda.matmul.allow_tf32 = matmul
    torch.backends.cudnn.allow_tf32 = cudnn
    torch.backends.cudnn.benchmark = False


def autocast(args, dev):
    """The forward passes' precision, as `train.precision` sets gantry's."""
    if args.precision == "fp32":
        return contextlib.nullcontext()
    dtype = torch.bfloat16 if args.precision == "bf16" else torch.float16
    return torch.autocast(dev.type, dtype=dtype)


class Scaled:
    """fp16's loss scaling (torch.amp.GradScaler, one per optimiser as gantry has); a pass-through
    in other precisions."""

    def __init__(self, args, dev, opt):
        self.opt = opt
        self.scaler = torch.amp.GradScaler(dev.type) if args.precision == "fp16" else None

    def backward(self, loss):
        (self.scaler.scale(loss) if self.scaler else loss).backward()

    def step(self):
        if self.scaler:
            self.scaler.step(self.opt)
            self.scaler.update()
        else:
            self.opt.step()


def memory_format(args, *modules):
    """`--channels-last`: the modules' weights in channels-last, as `train.channels_last` does."""
    if args.channels_last:
        for m in modules:
            m.to(memory_format=torch.channels_last)


def setup(args):
    """Threads, seed and TF32 as `gantry bench` sets them; returns the device."""
    set_tf32(args.tf32)
    torch.set_num_threads(args.threads)
    torch.manual_seed(0)
    return torch.device(args.device)


def ema_update(g_ema, g, step_no, decay):
    """gantry's EMA: beta = min(decay, (1 + t) / (10 + t)); parameters averaged, buffers copied."""
    beta = min(decay, (1 + step_no) / (10 + step_no))
    with torch.no_grad():
        for pe, pg in zip(g_ema.parameters(), g.parameters()):
            pe.lerp_(pg, 1 - beta)
        for be, bg in zip(g_ema.buffers(), g.buffers()):
            be.copy_(bg)


def time_and_report(step, args, extra=None, quiet=False):
    """Runs `args.warmup` untimed and `args.steps` timed steps; prints one JSON line (unless
    `quiet`: the other ranks of a job)."""
    cuda = torch.device(args.device).type == "cuda"

    def sync():
        if cuda:
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    ms = []
    for _ in range(args.steps):
        t0 = time.perf_counter()
        step()
        sync()
        ms.append((time.perf_counter() - t0) * 1e3)
    out = {
        "what": args.what, "threads": torch.get_num_threads(), "device": args.device, "steps": args.steps,
        "median_ms": statistics.median(ms), "mean_ms": statistics.fmean(ms), "min_ms": min(ms),
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "tf32": args.tf32,
    }
    out.update(extra or {})
    if not quiet:
        print(json.dumps(out))
