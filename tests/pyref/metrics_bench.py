"""Inception feature extraction throughput: gantry vs pytorch-fid, same run, same threads.

Usage (from the repository root):
  cargo build --release -p gantry-metrics --example inception_bench
  .venv/bin/python tests/pyref/metrics_bench.py [--n 100] [--threads 2] [--sizes 32,256]
      [--repeats 1] [--gantry-batch 50] [--before OLD_INCEPTION_BENCH]

Both sides use pytorch-fid's layout with the same random weights (written once to a temp
dir in the legacy torch.save format), pytorch-fid preprocessing (bilinear resize to 299),
one untimed warm-up batch, and run in separate processes so that each reports its own peak
RSS (VmHWM). pytorch-fid runs its own code at its default batch of 50 (--batch); gantry at
--gantry-batch. With --repeats the tools alternate, each repeat a row, then the ratio's range;
--before adds an older build of the gantry binary to each repeat (before/after in one run).
Prints a markdown table; ratio = gantry / pytorch-fid images/s.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))


def vm_hwm_kib():
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1])
    return 0


def child(weights, size, n, threads, batch):
    """pytorch-fid's extraction loop (get_activations) on random uint8 images."""
    import torch
    import pytorch_fid.inception as pfi
    from metrics_common import random_fid_inception

    torch.set_num_threads(threads)
    torch.manual_seed(0)
    net = random_fid_inception(seed=0, calib_size=75)
    net.load_state_dict(torch.load(weights))
    pfi.fid_inception_v3 = lambda: net
    model = pfi.InceptionV3([3]).eval()
    images = torch.randint(0, 256, (n, 3, size, size), dtype=torch.uint8)

    def extract(x):
        out = []
        with torch.no_grad():
            for i in range(0, len(x), batch):
                b = x[i:i + batch].float() / 255  # ToTensor
                out.append(model(b)[0].squeeze(3).squeeze(2))
        return torch.cat(out)

    extract(images[:batch])
    t = time.perf_counter()
    pool = extract(images)
    secs = time.perf_counter() - t
    assert pool.shape == (n, 2048)
    print(json.dumps({"tool": "pytorch-fid", "size": size, "n": n,
                      "threads": torch.get_num_threads(), "images_per_s": n / secs,
                      "seconds": secs, "vm_hwm_kib": vm_hwm_kib()}))


def run(cmd):
    out = subprocess.run(cmd, check=True, capture_output=True, text=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--n", type=int, default=100)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--batch", type=int, default=50, help="pytorch-fid's batch")
    p.add_argument("--gantry-batch", type=int, default=50)
    p.add_argument("--repeats", type=int, default=1)
    p.add_argument("--before", help="an older inception_bench binary, run alongside")
    p.add_argument("--sizes", default="32,256")
    p.add_argument("--gantry", default=os.path.join(ROOT, "target/release/examples/inception_bench"))
    p.add_argument("--child", nargs=5, metavar=("WEIGHTS", "SIZE", "N", "THREADS", "BATCH"))
    a = p.parse_args()
    if a.child:
        w, s, n, t, b = a.child
        child(w, int(s), int(n), int(t), int(b))
        return
    if not os.path.exists(a.gantry):
        sys.exit(f"{a.gantry} missing: cargo build --release -p gantry-metrics --example inception_bench")

    import torch
    from metrics_common import random_fid_inception

    with tempfile.TemporaryDirectory() as tmp:
        weights = os.path.join(tmp, "weights.pth")
        torch.save(random_fid_inception(seed=0, calib_size=75).state_dict(), weights,
                   _use_new_zipfile_serialization=False)
        before = " | gantry before img/s | ratio before | gantry before MiB" if a.before else ""
        print(f"| input | N | threads | gantry img/s | pytorch-fid img/s | ratio | "
              f"gantry peak RSS MiB | pytorch-fid peak RSS MiB{before} |")
        print("|---|---|---|---|---|---|---|---|" + ("---|---|---|" if a.before else ""))
        summary = []
        for size in [int(s) for s in a.sizes.split(",")]:
            ratios, ratios_before = [], []
            for _ in range(a.repeats):
                common = [weights, str(size), str(a.n), str(a.threads)]
                g = run([a.gantry] + common + [str(a.gantry_batch)])
                r = run([sys.executable, os.path.abspath(__file__), "--child"] + common
                        + [str(a.batch)])
                ratios.append(g["images_per_s"] / r["images_per_s"])
                extra = ""
                if a.before:
                    o = run([a.before] + common + [str(a.batch)])
                    ratios_before.append(o["images_per_s"] / r["images_per_s"])
                    extra = (f" {o['images_per_s']:.2f} | {ratios_before[-1]:.2f} | "
                             f"{o['vm_hwm_kib'] / 1024:.0f} |")
                print(f"| {size}x{size} | {a.n} | {a.threads} | {g['images_per_s']:.2f} | "
                      f"{r['images_per_s']:.2f} | {ratios[-1]:.2f} | "
                      f"{g['vm_hwm_kib'] / 1024:.0f} | {r['vm_hwm_kib'] / 1024:.0f} |{extra}",
                      flush=True)
            line = f"{size}x{size}: ratio {min(ratios):.2f}-{max(ratios):.2f}"
            if ratios_before:
                line += f" (before: {min(ratios_before):.2f}-{max(ratios_before):.2f})"
            summary.append(line + f" over {a.repeats} repeat(s)")
        print()
        print("\n".join(summary))


if __name__ == "__main__":
    main()
