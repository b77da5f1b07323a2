"""Peak memory of the release binary on hostile files (issue 19).

Writes one small hostile file per reader of outside bytes, runs the `gantry` command that reads
it, and reports the exit code, the peak resident memory of that process (os.wait4's ru_maxrss)
and its error line, next to two baselines (the binary doing nothing, and a small valid FID).
A reader is bounded when its peak stays near the baseline whatever the file claims.

Usage: python benches/hostile_memory.py [GANTRY_BINARY]
  (default: $GANTRY_BIN, else target/release/gantry of this checkout)
"""

import os
import pickle
import struct
import subprocess
import sys
import tempfile
import zipfile
import zlib

import numpy as np
import torch
from PIL import Image

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests", "pyref"))
from metrics_common import random_fid_inception  # noqa: E402


def peak(args):
    """Exit code, peak RSS in MiB and the last stderr line of one run."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        os.dup2(w, 2)
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, 1)
        os.execv(args[0], args)
    os.close(w)
    err = b""
    while chunk := os.read(r, 65536):
        err += chunk
    os.close(r)
    _, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    lines = [l for l in err.decode(errors="replace").splitlines() if l.strip()]
    return code, usage.ru_maxrss / 1024, (lines[-1] if lines else "")


def pickle_bytes(obj):
    return pickle.dumps(obj, protocol=2)


def memo_bomb_pickle(big=8 << 20, copies=2000):
    """One 8 MiB string, memoised, then fetched into a list `copies` times (16 GB of copies)."""
    b = bytearray([0x80, 2, ord("X")]) + struct.pack("<I", big) + b"a" * big
    b += bytes([ord("q"), 0, ord("]"), ord("(")])
    b += bytes([ord("h"), 0]) * copies
    b += b"e."
    return bytes(b)


def write_zip(path, name, data, compress):
    method = zipfile.ZIP_DEFLATED if compress else zipfile.ZIP_STORED
    with zipfile.ZipFile(path, "w", method) as z:
        z.writestr(name, data)


def write_zip_bomb(path, inflated=2 << 30):
    """A deflate stream of `inflated` zeros, written without holding them."""
    comp = zlib.compressobj(9, zlib.DEFLATED, -15)
    chunk = bytes(1 << 24)
    body = bytearray()
    crc = 0
    for _ in range(inflated // len(chunk)):
        body += comp.compress(chunk)
        crc = zlib.crc32(chunk, crc)
    body += comp.flush()
    name = b"archive/data.pkl"
    # Zip64 is not needed: 2 GiB - 1 fits the 32-bit sizes when inflated < 4 GiB.
    local = struct.pack("<IHHHHHIIIHH", 0x04034B50, 20, 0, 8, 0, 0, crc, len(body), inflated, len(name), 0)
    central = struct.pack(
        "<IHHHHHHIIIHHHHHII", 0x02014B50, 20, 20, 0, 8, 0, 0, crc, len(body), inflated, len(name), 0, 0, 0, 0, 0, 0
    )
    with open(path, "wb") as f:
        f.write(local + name + body)
        cd_offset = f.tell()
        f.write(central + name)
        cd_size = f.tell() - cd_offset
        f.write(struct.pack("<IHHHHIIH", 0x06054B50, 0, 0, 1, 1, cd_size, cd_offset, 0))


def write_idx(dirpath, n, h, w):
    """MNIST IDX files whose headers claim n images of h x w, with 100 bytes of data."""
    os.makedirs(dirpath, exist_ok=True)
    for name, dims in [("train-images-idx3-ubyte", [n, h, w]), ("train-labels-idx1-ubyte", [n])]:
        with open(os.path.join(dirpath, name), "wb") as f:
            f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims))
            f.write(bytes(100))
    for name, dims in [("t10k-images-idx3-ubyte", [10, 28, 28]), ("t10k-labels-idx1-ubyte", [10])]:
        with open(os.path.join(dirpath, name), "wb") as f:
            f.write(bytes([0, 0, 8, len(dims)]) + b"".join(struct.pack(">I", d) for d in dims))
            f.write(bytes(int(np.prod(dims))))


def write_png_claiming(path, w, h):
    """A PNG whose IHDR claims w x h (CRC fixed) followed by a tiny IDAT."""
    def chunk(kind, data):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)
    idat = zlib.compress(bytes(1000))
    with open(path, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", idat) + chunk(b"IEND", b""))


def write_npz_claiming(path, n):
    """A pytorch-fid .npz whose `sigma` header claims n x n float64, with 64 bytes of data."""
    def npy(shape):
        header = "{'descr': '<f8', 'fortran_order': False, 'shape': %s, }" % (shape,)
        header = header.ljust(118) + "\n"
        return b"\x93NUMPY\x01\x00" + struct.pack("<H", len(header)) + header.encode() + bytes(64)

    with zipfile.ZipFile(path, "w", zipfile.ZIP_STORED) as z:
        z.writestr("mu.npy", npy((n,)))
        z.writestr("sigma.npy", npy((n, n)))


def main():
    default = os.environ.get("GANTRY_BIN") or os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "target", "release", "gantry")
    binary = os.path.abspath(sys.argv[1] if len(sys.argv) > 1 else default)
    if not os.access(binary, os.X_OK):
        sys.exit(f"hostile_memory.py: {binary} is missing (build it: scripts/build.sh)")
    tmp = tempfile.mkdtemp(prefix="gantry-hostile-")
    j = lambda *p: os.path.join(tmp, *p)

    # Valid inputs the hostile ones sit beside.
    rng = np.random.default_rng(0)
    for side in ("a", "b"):
        os.makedirs(j(side))
        for i in range(4):
            Image.fromarray(rng.integers(0, 255, (32, 32, 3), dtype=np.uint8)).save(j(side, f"{i}.png"))
    mu, sigma = np.zeros(64), np.eye(64)
    np.savez(j("ok1.npz"), mu=mu, sigma=sigma)
    np.savez(j("ok2.npz"), mu=mu + 0.1, sigma=sigma)
    weights = j("weights.pth")  # pytorch-fid's layout, random values (no download here)
    torch.save(random_fid_inception().state_dict(), weights)

    # Hostile files.
    write_zip(j("memo-bomb.pth"), "archive/data.pkl", memo_bomb_pickle(), compress=False)
    legacy = pickle_bytes(0x1950A86A20F9469CFC6C) + pickle_bytes(1001) + pickle_bytes({})
    with open(j("memo-bomb-legacy.pth"), "wb") as f:
        f.write(legacy + memo_bomb_pickle())
    write_zip_bomb(j("zip-bomb.pth"))
    write_idx(j("idx"), 1_000_000_000, 28, 28)
    os.makedirs(j("png"))
    write_png_claiming(j("png", "huge.png"), 60000, 60000)
    write_npz_claiming(j("huge.npz"), 1_000_000)
    with open(j("deep.toml"), "w") as f:
        f.write("x = " + "[" * 200_000 + "]" * 200_000 + "\n")

    # A finished tiny run, then its generator store replaced by a header that claims 1 TiB.
    run_dir = j("run")
    subprocess.run(
        [binary, "train", "--out", run_dir, "--set", "train.steps=2", "--set", "data.size=16",
         "--set", "data.resolution=8", "--set", "model.ngf=4", "--set", "model.ndf=4",
         "--set", "train.batch_size=4", "--set", "train.checkpoint_every=2"],
        check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
    )
    ckpts = sorted(os.listdir(os.path.join(run_dir, "checkpoints")))
    header = b'{"w":{"dtype":"F32","shape":[262144,1048576],"data_offsets":[0,1099511627776]}}'
    for name in ("g", "g_ema"):
        store = os.path.join(run_dir, "checkpoints", ckpts[-1], f"{name}.safetensors")
        with open(store, "wb") as f:
            f.write(struct.pack("<Q", len(header)) + header + bytes(64))

    cases = [
        ("baseline: `gantry presets`", None, [binary, "presets"]),
        ("baseline: FID of two 64-d .npz", None, [binary, "fid", j("ok1.npz"), j("ok2.npz")]),
        ("baseline: FID of two 4-image folders", None,
         [binary, "fid", j("a"), j("b"), "--weights", weights]),
        ("zip .pth, 8 MiB string copied 2,000x from the memo", j("memo-bomb.pth"),
         [binary, "fid", j("a"), j("b"), "--weights", j("memo-bomb.pth")]),
        ("legacy .pth, same memo bomb", j("memo-bomb-legacy.pth"),
         [binary, "fid", j("a"), j("b"), "--weights", j("memo-bomb-legacy.pth")]),
        ("zip .pth whose data.pkl inflates to 2 GiB", j("zip-bomb.pth"),
         [binary, "fid", j("a"), j("b"), "--weights", j("zip-bomb.pth")]),
        ("IDX claiming 10^9 images of 28x28", j("idx", "train-images-idx3-ubyte"),
         [binary, "fid", "mnist:" + j("idx"), j("b"), "--weights", weights]),
        ("PNG claiming 60000x60000", j("png", "huge.png"),
         [binary, "fid", j("png"), j("a"), "--weights", weights]),
        (".npz claiming a 10^6 x 10^6 sigma", j("huge.npz"), [binary, "fid", j("huge.npz"), j("ok1.npz")]),
        ("config TOML nested 200,000 deep", j("deep.toml"),
         [binary, "train", "--config", j("deep.toml"), "--dry-run"]),
        ("checkpoint store claiming 1 TiB", store, [binary, "sample", "--checkpoint", run_dir, "--n", "4",
                                                    "--out", j("samples")]),
    ]
    print("| input | file size | exit | peak RSS (MiB) | message |")
    print("|---|---|---|---|---|")
    for name, path, args in cases:
        size = f"{os.path.getsize(path) / 2**20:.1f} MiB" if path else "-"
        code, rss, msg = peak(args)
        msg = msg.replace("|", "\\|")
        if len(msg) > 110:
            msg = msg[:107] + "..."
        print(f"| {name} | {size} | {code} | {rss:.0f} | {msg} |")


if __name__ == "__main__":
    main()
