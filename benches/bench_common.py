"""Shared by the PyTorch twins of `gantry bench`: the EMA update gantry does, and the timing loop
that prints the same JSON line as `gantry bench`."""
import json
import resource
import statistics
import time

import torch


def ema_update(g_ema, g, step_no, decay):
    """gantry's EMA: beta = min(decay, (1 + t) / (10 + t)); parameters averaged, buffers copied."""
    beta = min(decay, (1 + step_no) / (10 + step_no))
    with torch.no_grad():
        for pe, pg in zip(g_ema.parameters(), g.parameters()):
            pe.lerp_(pg, 1 - beta)
        for be, bg in zip(g_ema.buffers(), g.buffers()):
            be.copy_(bg)


def time_and_report(step, args, extra=None):
    """Runs `args.warmup` untimed and `args.steps` timed steps; prints one JSON line."""
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
    }
    out.update(extra or {})
    print(json.dumps(out))
