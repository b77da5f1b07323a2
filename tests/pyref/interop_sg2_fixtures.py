"""Generator of the interop fixtures in tests/fixtures/interop/sg2/: tiny network-snapshot pickles
written by the OFFICIAL code of NVlabs/stylegan2-ada-pytorch, WentianZhang-ML/AdaptiveMix (its
generation/ folder, a stylegan2-ada-pytorch fork) and brownvc/R3GAN, exactly as their training
loops save them (`copy.deepcopy(module).eval().requires_grad_(False).cpu()` then
`pickle.dump(snapshot_data, f)`), the outputs those networks compute on fixed inputs (.npz, same
stem), two hostile pickles that run code when Python unpickles them, and text summaries
(keys.txt: every state-dict key and shape; structure.txt: what the pickles contain, read with an
allow-list unpickler that never executes embedded code).

It also documents and checks the key mapping from the official networks to gantry's twins
(tests/pyref/stylegan2_ref.py, tests/pyref/r3gan_ref.py): `official_to_gantry(state_dict, kwargs)`
and `verify` (the twin with the translated config loads the mapped state with strict=True and must
reproduce the official outputs).

Usage (the official sources extracted outside the repo, one folder per repository):

    .venv/bin/python tests/pyref/interop_sg2_fixtures.py --src /work/interop-src

`--src` holds NVlabs+stylegan2-ada-pytorch/, WentianZhang-ML+AdaptiveMix/ and brownvc+R3GAN/
(git archive of the commits in COMMITS). Each network is built in its own subprocess (the three
repositories share the top-level package names dnnlib, torch_utils, training). CPU only; the
official custom ops fall back to their reference implementations on CPU.

Patches (this script's, never the official files'): stub `requests` and `click` modules in
sys.modules (dnnlib/util.py imports requests at top level for open_url; legacy.py imports click for
its command-line decorators; neither is in gantry's venv and neither is used here), and for the
R3GAN optimizer state Adam gets betas=[0.0, 0.0] where R3GAN's train.py says [0, 0] (torch 2.11
rejects int betas). Nothing else was needed with torch 2.11 / numpy 2.4 / Python 3.11.
"""
import argparse
import collections
import copy
import io
import json
import os
import pickle
import pickletools
import struct
import subprocess
import sys
import tempfile
import types

import numpy as np
import torch

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
DEFAULT_OUT = os.path.join(ROOT, "tests", "fixtures", "interop", "sg2")

REPOS = {
    "sg2ada": "NVlabs+stylegan2-ada-pytorch",
    "adaptivemix": "WentianZhang-ML+AdaptiveMix/generation",
    "r3gan": "brownvc+R3GAN",
}
COMMITS = {
    "NVlabs/stylegan2-ada-pytorch": "d72cc7d041b42ec8e806021a205ed9349f87c6a4",
    "WentianZhang-ML/AdaptiveMix": "163e5d57705d91b5d3d3b27066f9132c63dc5291",
    "brownvc/R3GAN": "19a7ddf463fbac2bd39b4c1c73d63f1c441c7403",
}

RES, IMG_CH, N = 16, 3, 4
# stylegan2-ada train.py's --augpipe=bgc (its default).
BGC = dict(xflip=1, rotate90=1, xint=1, scale=1, rotate=1, aniso=1, xfrac=1, brightness=1, contrast=1,
           lumaflip=1, hue=1, saturation=1)
FIXTURES = {
    # channel_base 128, channel_max 16 at 16x16: 16 channels at 4x4 and 8x8, 8 at 16x16.
    "sg2ada-uncond": dict(repo="sg2ada", kind="sg2", seed=1, c_dim=0, z_dim=16, w_dim=16, map=2,
                          fp16=0, clamp=None, mbstd=4, aug_p=0.2),
    # train.py's defaults num_fp16_res=4, conv_clamp=256 (fp16 blocks: 8x8 and 16x16); z_dim !=
    # w_dim; mbstd group 2; D's label mapping at MappingNetwork's defaults (8 layers), as train.py.
    "sg2ada-cond": dict(repo="sg2ada", kind="sg2", seed=2, c_dim=3, z_dim=12, w_dim=8, map=2,
                        fp16=4, clamp=256, mbstd=2, aug_p=0.35),
    "adaptivemix": dict(repo="adaptivemix", kind="sg2", seed=3, c_dim=0, z_dim=16, w_dim=16, map=2,
                        fp16=4, clamp=256, mbstd=4, aug_p=0.1),
    # R3GAN: widths per stage 4x4, 8x8, 16x16 (G order; D gets them reversed, as its train.py);
    # 8 -> 8 has no 1x1 LinearLayer in the resampling layer, 8 -> 4 has one.
    "r3gan": dict(repo="r3gan", kind="r3gan", seed=4, c_dim=0, z_dim=12, widths=[8, 8, 4],
                  cards=[4, 4, 2], blocks=[1, 2, 1], expansion=2, fp16_stages=[]),
    # Conditional, with one bf16 stage in G (its last) and D (its first), as the presets do
    # (FP16Stages); the .npz has the official bf16 outputs and, *_fp32, the same with every
    # stage's DataType set to float32 after loading.
    "r3gan-cond": dict(repo="r3gan", kind="r3gan", seed=5, c_dim=3, z_dim=12, widths=[8, 8, 4],
                       cards=[4, 4, 2], blocks=[1, 2, 1], expansion=2, fp16_stages=[-1]),
}
LABELS = [0, 1, 2, 1]


# ---------------------------------------------------------------------------------------------
# Environment.

def patch_env():
    """The only patches: stub modules for two imports that gantry's venv lacks and that the code
    used here never calls. `requests` (dnnlib/util.py, for open_url) and `click` (legacy.py, only
    for the decorators of its command-line entry point, made identity decorators here)."""
    sys.modules.setdefault("requests", types.ModuleType("requests"))
    if "click" not in sys.modules:
        click = types.ModuleType("click")
        click.command = click.option = lambda *a, **k: (lambda f: f)
        sys.modules["click"] = click


PATCH_SRC = ("import sys, types; sys.modules.setdefault('requests', types.ModuleType('requests'));"
             "c = types.ModuleType('click'); c.command = c.option = lambda *a, **k: (lambda f: f);"
             "sys.modules.setdefault('click', c);")


def use_repo(src, repo):
    path = os.path.join(src, REPOS[repo])
    assert os.path.isdir(path), path
    patch_env()
    sys.path.insert(0, path)
    return path


def inputs(spec):
    z = np.random.RandomState(0).randn(N, spec["z_dim"]).astype(np.float32)
    x_real = np.random.RandomState(1).uniform(-1, 1, [N, IMG_CH, RES, RES]).astype(np.float32)
    c = np.eye(spec["c_dim"], dtype=np.float32)[LABELS] if spec["c_dim"] > 0 else np.zeros([N, 0], np.float32)
    return z, c, x_real


def perturb(module, gen, scale, buffers=True, skip=("resample_filter", "noise_const", "Kernel", "Hz_geom", "Hz_fbank")):
    """Moves every parameter (and buffer) away from init: += scale * randn, so zero-init biases,
    noise strengths and R3GAN's zero-init last layers are not zero. Mapping-network biases are
    stored divided by the lr multiplier (0.01), so they get 100x; w_avg gets 0.5 randn."""
    with torch.no_grad():
        named = list(module.named_parameters()) + (list(module.named_buffers()) if buffers else [])
        for name, t in named:
            leaf = name.rsplit(".", 1)[-1]
            if leaf in skip or not t.is_floating_point():
                continue
            s = scale
            if name.startswith("mapping.") and leaf == "bias":
                s = scale * 100
            if leaf == "w_avg":
                s = 0.5
            t.add_(torch.randn(t.shape, generator=gen) * s)


def dump_snapshot(path, snapshot_data):
    with open(path, "wb") as f:
        pickle.dump(snapshot_data, f)


# ---------------------------------------------------------------------------------------------
# Builders (each runs in a subprocess with one official repository on sys.path).

def build_sg2(name, spec, src, out):
    use_repo(src, spec["repo"])
    import dnnlib
    import legacy
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(1000 + spec["seed"])
    E = dnnlib.EasyDict
    # As stylegan2-ada-pytorch train.py builds them (cfg 'auto'-like, tiny).
    training_set_kwargs = E(class_name="training.dataset.ImageFolderDataset", path="~/datasets/tiny16.zip",
                            use_labels=spec["c_dim"] > 0, max_size=1000, xflip=False, resolution=RES)
    G_kwargs = E(class_name="training.networks.Generator", z_dim=spec["z_dim"], w_dim=spec["w_dim"],
                 mapping_kwargs=E(), synthesis_kwargs=E())
    D_kwargs = E(class_name="training.networks.Discriminator", block_kwargs=E(), mapping_kwargs=E(), epilogue_kwargs=E())
    G_kwargs.synthesis_kwargs.channel_base = D_kwargs.channel_base = 128
    G_kwargs.synthesis_kwargs.channel_max = D_kwargs.channel_max = 16
    G_kwargs.mapping_kwargs.num_layers = spec["map"]
    G_kwargs.synthesis_kwargs.num_fp16_res = D_kwargs.num_fp16_res = spec["fp16"]
    G_kwargs.synthesis_kwargs.conv_clamp = D_kwargs.conv_clamp = spec["clamp"]
    D_kwargs.epilogue_kwargs.mbstd_group_size = spec["mbstd"]
    augment_kwargs = E(class_name="training.augment.AugmentPipe", **BGC)
    # As training_loop.py.
    common_kwargs = dict(c_dim=spec["c_dim"], img_resolution=RES, img_channels=IMG_CH)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False)
    augment_pipe = dnnlib.util.construct_class_by_name(**augment_kwargs).train().requires_grad_(False)
    augment_pipe.p.copy_(torch.as_tensor(spec["aug_p"]))
    # "Training": G and D away from init; G_ema a copy of G (buffers: w_avg, noise_const are
    # copied from G each step by the official loop) with its own parameter offsets.
    perturb(G, gen, 0.1)
    perturb(D, gen, 0.1)
    G_ema = copy.deepcopy(G).eval()
    perturb(G_ema, gen, 0.05, buffers=False)

    snapshot_data = dict(training_set_kwargs=dict(training_set_kwargs))
    for key, module in [("G", G), ("D", D), ("G_ema", G_ema), ("augment_pipe", augment_pipe)]:
        if module is not None:
            module = copy.deepcopy(module).eval().requires_grad_(False).cpu()
        snapshot_data[key] = module
        del module
    pkl = os.path.join(out, name + ".pkl")
    dump_snapshot(pkl, snapshot_data)

    # Outputs, from the pickle as the official loader reads it.
    with open(pkl, "rb") as f:
        data = legacy.load_network_pkl(f)
    z, c, x_real = inputs(spec)
    zt, ct, xt = torch.from_numpy(z), torch.from_numpy(c), torch.from_numpy(x_real)
    res = dict(z=z, x_real=x_real)
    if spec["c_dim"] > 0:
        res["c"] = c
    Ge, Gt, Dt = data["G_ema"], data["G"], data["D"]
    with torch.no_grad():
        for suffix, kw in [("", {})] + ([("_fp32", dict(force_fp32=True))] if spec["fp16"] > 0 else []):
            res["img_ema" + suffix] = Ge(zt, ct, truncation_psi=1, noise_mode="const", **kw)
            res["img_ema_trunc" + suffix] = Ge(zt, ct, truncation_psi=0.5, noise_mode="const", **kw)
            res["img_g" + suffix] = Gt(zt, ct, noise_mode="const", **kw)
            res["d_logits" + suffix] = Dt(xt, ct, **kw)
        res["ws"] = Ge.mapping(zt, ct)
        # The in-memory modules agree with the reloaded ones.
        ref = snapshot_data["G_ema"](zt, ct, truncation_psi=1, noise_mode="const")
        assert torch.equal(ref, res["img_ema"])
    np.savez(os.path.join(out, name + ".npz"), **{k: np.asarray(v, dtype=np.float32) for k, v in res.items()})
    return snapshot_data


def adam_state(module, gen, lr):
    """An optimizer state after one step, as R3GAN's snapshot holds (`<phase>_opt_state`)."""
    m = copy.deepcopy(module).requires_grad_(True)
    # train.py passes betas=[0,0] (ints), which torch 2.11's Adam rejects ("betas must be either
    # both floats or both Tensors"): floats here. The loop then sets betas = (0, cur_beta2).
    opt = torch.optim.Adam(m.parameters(), lr=lr, betas=[0.0, 0.0], eps=1e-8)
    for g in opt.param_groups:
        g["betas"] = (0, 0.9)
    for p in m.parameters():
        p.grad = torch.randn(p.shape, generator=gen)
    opt.step()
    return opt.state_dict()


def build_r3gan(name, spec, src, out):
    use_repo(src, "r3gan")
    import dnnlib
    import legacy
    torch.manual_seed(spec["seed"])
    gen = torch.Generator().manual_seed(1000 + spec["seed"])
    E = dnnlib.EasyDict
    # As R3GAN train.py builds them.
    training_set_kwargs = E(class_name="training.dataset.ImageFolderDataset", path="~/datasets/tiny16.zip",
                            use_labels=spec["c_dim"] > 0, max_size=1000, xflip=False, resolution=RES, random_seed=0)
    G_kwargs = E(class_name="training.networks.Generator")
    D_kwargs = E(class_name="training.networks.Discriminator")
    W, C, B, fp16 = spec["widths"], spec["cards"], spec["blocks"], spec["fp16_stages"]
    if spec["c_dim"] > 0:
        G_kwargs.ConditionEmbeddingDimension = spec["z_dim"]
        D_kwargs.ConditionEmbeddingDimension = W[0]
    G_kwargs.NoiseDimension = spec["z_dim"]
    G_kwargs.WidthPerStage = W
    G_kwargs.CardinalityPerStage = C
    G_kwargs.BlocksPerStage = B
    G_kwargs.ExpansionFactor = spec["expansion"]
    G_kwargs.FP16Stages = fp16
    D_kwargs.WidthPerStage = [*reversed(W)]
    D_kwargs.CardinalityPerStage = [*reversed(C)]
    D_kwargs.BlocksPerStage = [*reversed(B)]
    D_kwargs.ExpansionFactor = spec["expansion"]
    D_kwargs.FP16Stages = [x + len(fp16) for x in fp16]
    # As training_loop.py.
    common_kwargs = dict(c_dim=spec["c_dim"], img_resolution=RES)
    G = dnnlib.util.construct_class_by_name(**G_kwargs, **common_kwargs).train().requires_grad_(False)
    D = dnnlib.util.construct_class_by_name(**D_kwargs, **common_kwargs).train().requires_grad_(False)
    perturb(G, gen, 0.1)
    perturb(D, gen, 0.1)
    G_ema = copy.deepcopy(G).eval()
    perturb(G_ema, gen, 0.05, buffers=False)
    cur_nimg = 12000
    snapshot_data = dict(G=G, D=D, G_ema=G_ema, training_set_kwargs=dict(training_set_kwargs), cur_nimg=cur_nimg)
    for phase_name, module in [("D", D), ("G", G)]:  # the loop's phase order
        snapshot_data[phase_name + "_opt_state"] = adam_state(module, gen, 2e-4)
    for key, value in snapshot_data.items():
        if isinstance(value, torch.nn.Module):
            value = copy.deepcopy(value).eval().requires_grad_(False)
            snapshot_data[key] = value.cpu()
        del value
    pkl = os.path.join(out, name + ".pkl")
    dump_snapshot(pkl, snapshot_data)

    with open(pkl, "rb") as f:
        data = legacy.load_network_pkl(f)
    z, c, x_real = inputs(spec)
    zt, ct, xt = torch.from_numpy(z), torch.from_numpy(c), torch.from_numpy(x_real)
    res = dict(z=z, x_real=x_real)
    if spec["c_dim"] > 0:
        res["c"] = c
    with torch.no_grad():
        # Exact calls: G_ema(z, c) (training_loop.py's image grid, gen_images.py) and D(x, c);
        # outputs cast to float32 as the training loop does (`.to(torch.float)`).
        res["img_ema"] = data["G_ema"](zt, ct).float()
        res["img_g"] = data["G"](zt, ct).float()
        res["d_logits"] = data["D"](xt, ct).float()
        if fp16:
            for key in ["G", "D", "G_ema"]:
                for stage in data[key].Model.MainLayers:
                    stage.DataType = torch.float32
            res["img_ema_fp32"] = data["G_ema"](zt, ct)
            res["img_g_fp32"] = data["G"](zt, ct)
            res["d_logits_fp32"] = data["D"](xt, ct)
    np.savez(os.path.join(out, name + ".npz"), **{k: np.asarray(v, dtype=np.float32) for k, v in res.items()})


# ---------------------------------------------------------------------------------------------
# Hostile pickles.

PAYLOAD = "import os as _gantry_os\nopen(_gantry_os.environ['GANTRY_MARKER'], 'w').close()\n"


def build_hostile_persistent(src, out):
    """A stylegan2-ada snapshot (the uncond fixture's networks) whose every persistence meta has
    PAYLOAD prepended to `module_src`. Written with a Pickler.reducer_override that edits the meta
    of each persistent object's reduce tuple; nothing of the edited source runs here."""
    use_repo(src, "sg2ada")
    from torch_utils import persistence
    with open(os.path.join(out, "sg2ada-uncond.pkl"), "rb") as f:
        snapshot = pickle.load(f)  # our own fixture, written above by the official code
    edited = {}

    class Editor(pickle.Pickler):
        def reducer_override(self, obj):
            if not persistence.is_persistent(obj):
                return NotImplemented
            fn, args, *rest = obj.__reduce__()
            meta = dict(args[0])
            src_ = meta["module_src"]
            if id(src_) not in edited:
                edited[id(src_)] = (src_, PAYLOAD + src_)  # keep src_ alive, one edited str per module
            meta["module_src"] = edited[id(src_)][1]
            return (fn, (meta,), *rest)

    path = os.path.join(out, "hostile-persistent.pkl")
    with open(path, "wb") as f:
        Editor(f).dump(snapshot)


def build_hostile_reduce(out):
    """A plain pickle (protocol 2): {'G': builtins.exec(CODE), 'D': posix.system(SH)}; both create
    $GANTRY_MARKER. Hand-assembled opcodes."""
    code = PAYLOAD.encode()
    sh = b'touch "$GANTRY_MARKER"'
    def unicode(b):
        return b"X" + struct.pack("<I", len(b)) + b
    body = (b"\x80\x02}(" + unicode(b"G") + b"cbuiltins\nexec\n" + unicode(code) + b"\x85R"
            + unicode(b"D") + b"cposix\nsystem\n" + unicode(sh) + b"\x85R" + b"u.")
    with open(os.path.join(out, "hostile-reduce.pkl"), "wb") as f:
        f.write(body)


def check_hostile(src, out):
    """Python (the official loader, and plain pickle.load) DOES run the payloads."""
    results = {}
    for fname, loader in [("hostile-persistent.pkl", "legacy"), ("hostile-persistent.pkl", "pickle"),
                          ("hostile-reduce.pkl", "pickle")]:
        with tempfile.TemporaryDirectory() as tmp:
            marker = os.path.join(tmp, "marker")
            env = dict(os.environ, GANTRY_MARKER=marker)
            code = (PATCH_SRC + "import pickle;"
                    f"sys.path.insert(0, {os.path.join(src, REPOS['sg2ada'])!r}); import legacy;"
                    f"f = open({os.path.join(out, fname)!r}, 'rb');"
                    + ("legacy.load_network_pkl(f)" if loader == "legacy" else "pickle.load(f)"))
            subprocess.run([sys.executable, "-c", code], env=env, check=True, capture_output=True)
            made = os.path.exists(marker)
            results[f"{fname} via {loader}"] = made
            assert made, f"{fname} via {loader}: no marker"
    return results


# ---------------------------------------------------------------------------------------------
# Safe reading: an allow-list unpickler that never imports project code, never runs module_src,
# and rebuilds tensors from the nested legacy torch.save bytes itself (numpy arrays).

class Opaque:
    """An instance of a class the pickle names (NEWOBJ / REDUCE of a class + BUILD)."""
    GLOBAL = None

    def __new__(cls, *args, **kw):
        o = object.__new__(cls)
        o.args, o.state = args, None
        return o

    def __init__(self, *args, **kw):
        pass

    def __setstate__(self, state):
        self.state = state

    def __repr__(self):
        return f"<{'.'.join(self.GLOBAL)}>"


class Persistent:
    """torch_utils.persistence._reconstruct_persistent_obj(meta): meta kept, source not run."""

    def __init__(self, meta):
        self.meta = meta
        self.state = meta["state"]

    def __repr__(self):
        return f"<persistent {self.meta['class_name']}>"


class Storage:
    def __init__(self, dtype, array, key, location):
        self.dtype, self.array, self.key, self.location = dtype, array, key, location


STORAGE_DTYPES = {"FloatStorage": np.float32, "DoubleStorage": np.float64, "HalfStorage": np.float16,
                  "LongStorage": np.int64, "IntStorage": np.int32, "BoolStorage": np.bool_,
                  "ByteStorage": np.uint8, "BFloat16Storage": None}


def load_from_bytes(b):
    """torch.storage._load_from_bytes: a legacy (non-zip) torch.save of one storage: pickles of
    the magic number, the protocol version (1001), sys_info, then the object (a persistent id
    ('storage', <torch.XStorage>, key, location, numel, view_metadata)), then the list of storage
    keys, then per key: int64 LE element count + raw little-endian data."""
    f = io.BytesIO(b)
    magic = pickle.load(f)
    assert magic == 0x1950a86a20f9469cfc6c, magic
    assert pickle.load(f) == 1001
    pickle.load(f)  # sys_info: {'protocol_version', 'little_endian', 'type_sizes'}
    ids = []

    class Inner(pickle.Unpickler):
        def find_class(self, module, name):
            assert module == "torch" and name in STORAGE_DTYPES, (module, name)
            return name

        def persistent_load(self, pid):
            assert pid[0] == "storage", pid
            ids.append(pid)
            return pid

    pid = Inner(f).load()
    keys = pickle.load(f)
    (_, stype, key, location, numel, view) = pid
    assert keys == [key] and view is None
    (count,) = struct.unpack("<q", f.read(8))
    dt = STORAGE_DTYPES[stype]
    if dt is None:  # bfloat16: upper halves of float32
        raw = np.frombuffer(f.read(2 * count), np.uint16).astype(np.uint32) << 16
        arr = raw.view(np.float32)
    else:
        arr = np.frombuffer(f.read(np.dtype(dt).itemsize * count), dt)
    assert f.read() == b""
    return Storage(stype, arr, key, location)


TENSOR_STATS = collections.Counter()


class NpScalar(float):
    """A numpy float64 scalar (numpy.core.multiarray.scalar(dtype, raw bytes)) from the pickle."""

    def __repr__(self):
        return f"np.float64({float(self)!r})"


def np_scalar(dtype, raw):
    v = np.frombuffer(raw, dtype)[0]
    TENSOR_STATS[f"numpy scalar {dtype}"] += 1
    return NpScalar(v) if dtype.kind == "f" else v.item()


def rebuild_tensor_v2(storage, offset, size, stride, requires_grad, hooks, metadata=None):
    TENSOR_STATS[f"storage {storage.dtype} location={storage.location}"] += 1
    TENSOR_STATS[f"_rebuild_tensor_v2 args={6 if metadata is None else 7} requires_grad={requires_grad} "
                 f"hooks={type(hooks).__name__}({len(hooks)})"] += 1
    contiguous = list(stride) == [int(np.prod(size[i + 1:])) for i in range(len(size))]
    TENSOR_STATS[f"offset={'0' if offset == 0 else '>0'} contiguous={contiguous} "
                 f"storage_numel==numel={storage.array.size == int(np.prod(size))}"] += 1
    item = storage.array.itemsize
    a = np.lib.stride_tricks.as_strided(storage.array[offset:], shape=size, strides=[s * item for s in stride])
    return np.array(a)


def rebuild_parameter(data, requires_grad, hooks):
    TENSOR_STATS[f"_rebuild_parameter requires_grad={requires_grad} hooks={type(hooks).__name__}({len(hooks)})"] += 1
    return data


SAFE = {
    ("torch_utils.persistence", "_reconstruct_persistent_obj"): Persistent,
    ("torch._utils", "_rebuild_tensor_v2"): rebuild_tensor_v2,
    ("torch._utils", "_rebuild_parameter"): rebuild_parameter,
    ("torch.storage", "_load_from_bytes"): load_from_bytes,
    ("collections", "OrderedDict"): collections.OrderedDict,
    ("builtins", "set"): set,
}


class SafeUnpickler(pickle.Unpickler):
    def __init__(self, f):
        super().__init__(f)
        self.globals = collections.Counter()

    def find_class(self, module, name):
        self.globals[f"{module}.{name}"] += 1
        if (module, name) in SAFE:
            return SAFE[(module, name)]
        if module == "torch" and name in ("float32", "bfloat16", "float16", "float64"):
            return f"torch.{name}"  # a torch.dtype pickles as the bare GLOBAL torch.<dtype>
        if (module, name) == ("numpy", "dtype"):
            return np.dtype  # REDUCE numpy.dtype('f8', False, True) + BUILD (3, '<', ...)
        if name == "scalar" and module in ("numpy.core.multiarray", "numpy._core.multiarray"):
            # numpy 1.x writes numpy.core.multiarray, numpy 2.x numpy._core.multiarray
            return np_scalar
        if (module, name) == ("dnnlib.util", "EasyDict"):
            return type("EasyDict", (dict,), {})
        if module.startswith("torch.nn.modules.") or module in ("training.networks", "R3GAN.Networks",
                                                                "R3GAN.FusedOperators", "R3GAN.Resamplers"):
            return type(name, (Opaque,), {"GLOBAL": (module, name)})
        raise pickle.UnpicklingError(f"global {module}.{name} is not allowed")


def safe_load(path):
    with open(path, "rb") as f:
        u = SafeUnpickler(f)
        return u.load(), u.globals


def module_state(obj):
    return obj.state if isinstance(obj, (Persistent, Opaque)) else None


def state_dict_of(obj, prefix=""):
    """The state_dict of a safely-read module: `_parameters` (None entries skipped), `_buffers`
    minus `_non_persistent_buffers_set`, recursively through `_modules`."""
    st = module_state(obj)
    out = collections.OrderedDict()
    for k, v in st["_parameters"].items():
        if v is not None:
            out[prefix + k] = v
    for k, v in st["_buffers"].items():
        if v is not None and k not in st.get("_non_persistent_buffers_set", set()):
            out[prefix + k] = v
    for k, m in st["_modules"].items():
        if m is not None:
            out.update(state_dict_of(m, prefix + k + "."))
    return out


def opcode_summary(path):
    with open(path, "rb") as f:
        data = f.read()
    ops = collections.Counter()
    proto = None
    for op, arg, pos in pickletools.genops(data):
        ops[op.name] += 1
        if op.name == "PROTO":
            proto = arg
    return proto, ops


def describe(path, name):
    """Text summary of a snapshot pickle, from the safe reader."""
    TENSOR_STATS.clear()
    obj, globals_ = safe_load(path)
    proto, ops = opcode_summary(path)
    lines = [f"== {name}.pkl ({os.path.getsize(path)} bytes, pickle protocol {proto})",
             "top-level: dict, keys in order: " + ", ".join(obj.keys()),
             "GLOBAL/STACK_GLOBAL names (each resolved once, then memoized):"]
    lines += [f"  {k}" for k in sorted(globals_)]
    lines.append("opcodes: " + ", ".join(f"{k}:{v}" for k, v in sorted(ops.items())))
    lines.append("tensors (counts): " + "; ".join(f"{k}: {v}" for k, v in sorted(TENSOR_STATS.items())))
    for key, v in obj.items():
        if isinstance(v, Persistent):
            m = v.meta
            lines.append(f"[{key}] persistent meta keys: {list(m.keys())}; type={m['type']!r} version={m['version']} "
                         f"class_name={m['class_name']!r} module_src: {len(m['module_src'])} chars, first line "
                         f"{m['module_src'].splitlines()[0][:60]!r}")
            st = m["state"]
            lines.append(f"    state keys: {list(st.keys())}")
            lines.append(f"    _init_args={st['_init_args']!r}")
            lines.append(f"    _init_kwargs={json.dumps(st['_init_kwargs'], default=repr)}")
            plain = {k: val for k, val in st.items() if not k.startswith("_") and k != "training"}
            lines.append(f"    plain attributes: {plain!r}")
            lines.append("    submodules (class_name per path): " + ", ".join(
                f"{p}={c}" for p, c in walk_classes(v)))
            lines.append(f"    containers: _parameters {type(st['_parameters']).__name__}, _buffers "
                         f"{type(st['_buffers']).__name__}, _modules {type(st['_modules']).__name__}, "
                         f"_non_persistent_buffers_set {type(st['_non_persistent_buffers_set']).__name__}, "
                         f"_init_kwargs {type(st['_init_kwargs']).__name__} (nested: "
                         f"{sorted({type(x).__name__ for x in st['_init_kwargs'].values() if isinstance(x, dict)})})")
            lines += class_attrs(v)
        elif isinstance(v, Opaque):
            st = v.state
            lines.append(f"[{key}] NEWOBJ {'.'.join(v.GLOBAL)} + BUILD; state keys: {list(st.keys())}")
            plain = {k: val for k, val in st.items() if not k.startswith("_") and k != "training"}
            lines.append(f"    plain attributes: {plain!r}")
            lines.append("    submodules (class per path): " + ", ".join(f"{p}={c}" for p, c in walk_classes(v)))
            lines += class_attrs(v)
        elif isinstance(v, dict) and "param_groups" in v:
            pg = v["param_groups"][0]
            s0 = v["state"][0]
            lines.append(f"[{key}] optimizer state_dict: state: {len(v['state'])} entries of "
                         f"{ {k: (getattr(x, 'shape', x)) for k, x in s0.items()} }; param_groups[0]: "
                         f"{ {k: x for k, x in pg.items() if k != 'params'} } params={pg['params']}")
        else:
            lines.append(f"[{key}] {v!r}")
    return "\n".join(lines), obj


def class_attrs(root):
    """Per class, its first instance: plain attributes (numpy scalars shown as np.float64),
    parameter and buffer names, non-persistent buffers."""
    seen, lines = set(), []

    def rec(o):
        name = o.meta["class_name"] if isinstance(o, Persistent) else ".".join(o.GLOBAL)
        st = module_state(o)
        if name not in seen:
            seen.add(name)
            plain = {k: v for k, v in st.items() if not k.startswith("_") and k != "training"}
            lines.append(f"      class {name}: params {list(k for k, v in st['_parameters'].items() if v is not None)}"
                         f"{' (None: ' + str([k for k, v in st['_parameters'].items() if v is None]) + ')' if any(v is None for v in st['_parameters'].values()) else ''}"
                         f", buffers {list(st['_buffers'])}, non-persistent {sorted(st['_non_persistent_buffers_set'])}, "
                         f"training={st['training']}, attrs {plain!r}")
        for m in st["_modules"].values():
            if m is not None:
                rec(m)
    rec(root)
    return lines


def walk_classes(obj, prefix=""):
    name = obj.meta["class_name"] if isinstance(obj, Persistent) else ".".join(obj.GLOBAL)
    yield (prefix or "<root>", name)
    for k, m in module_state(obj)["_modules"].items():
        if m is not None:
            yield from walk_classes(m, prefix + k + ".")


# ---------------------------------------------------------------------------------------------
# Official -> gantry twin key mapping.

def sg2_config(G_kwargs, D_kwargs):
    """Official init_kwargs -> gantry StyleGan2Config (+ what gantry takes from the data).
    Defaults are those of the official class signatures (networks.py), which the pickle does
    not repeat: init_kwargs only hold what the caller passed."""
    sk = G_kwargs.get("synthesis_kwargs", {}) or {}
    mk = G_kwargs.get("mapping_kwargs", {}) or {}
    ek = D_kwargs.get("epilogue_kwargs", {}) or {}
    dmk = D_kwargs.get("mapping_kwargs", {}) or {}
    bk = D_kwargs.get("block_kwargs", {}) or {}
    cfg = dict(z_dim=G_kwargs["z_dim"], w_dim=G_kwargs["w_dim"],
               channel_base=sk.get("channel_base", 32768), channel_max=sk.get("channel_max", 512),
               mapping_layers=mk.get("num_layers", 8), mapping_lr_mul=mk.get("lr_multiplier", 0.01),
               mbstd_group=ek.get("mbstd_group_size", 4), mbstd_channels=ek.get("mbstd_num_channels", 1),
               conditional=G_kwargs.get("c_dim", 0) > 0)
    data = dict(resolution=G_kwargs["img_resolution"], channels=G_kwargs["img_channels"],
                num_classes=G_kwargs.get("c_dim", 0))
    # What gantry cannot express: must hold for an exact import.
    checks = {
        "D channel_base/max == G's": (D_kwargs.get("channel_base", 32768), D_kwargs.get("channel_max", 512))
        == (cfg["channel_base"], cfg["channel_max"]),
        "G architecture skip": sk.get("architecture", "skip") == "skip",
        "D architecture resnet": D_kwargs.get("architecture", "resnet") == "resnet",
        "D c_dim == G c_dim": D_kwargs.get("c_dim", 0) == G_kwargs.get("c_dim", 0),
        "D mapping at defaults (8 layers, lr 0.01)": dmk.get("num_layers", 8) == 8 and dmk.get("lr_multiplier", 0.01) == 0.01,
        "D cmap_dim default": D_kwargs.get("cmap_dim") is None,
        "G mapping embed/layer features default (= w_dim)": mk.get("embed_features") is None and mk.get("layer_features") is None,
        "mapping activation lrelu": mk.get("activation", "lrelu") == "lrelu" and dmk.get("activation", "lrelu") == "lrelu",
        "no freeze_layers": bk.get("freeze_layers", 0) == 0,
        "default kernels/filters": all(k not in d for d in (sk, bk, D_kwargs) for k in ("resample_filter", "kernel_size", "activation")),
        "mbstd_group divides batch (gantry falls back)": True,
    }
    departures = {
        "conv_clamp (official clamps in every precision; gantry only in fp16)": (sk.get("conv_clamp"), D_kwargs.get("conv_clamp")),
        "num_fp16_res (official fp16 for top resolutions on any device; gantry: train.precision)": (sk.get("num_fp16_res", 0), D_kwargs.get("num_fp16_res", 0)),
        "w_avg_beta": mk.get("w_avg_beta", 0.995),
    }
    return cfg, data, checks, departures


def r3gan_config(G_kwargs, D_kwargs):
    """R3GAN kwargs (train.py's G_kwargs/D_kwargs; the pickle does NOT hold them, its classes are
    not persistent: recover them from the state, see r3gan_config_from_state)."""
    cfg = dict(z_dim=G_kwargs["NoiseDimension"], widths=list(G_kwargs["WidthPerStage"]),
               cardinality=list(G_kwargs["CardinalityPerStage"]), blocks=list(G_kwargs["BlocksPerStage"]),
               expansion=G_kwargs["ExpansionFactor"], kernel=G_kwargs.get("KernelSize", 3),
               conditional=G_kwargs.get("c_dim", 0) > 0)
    return cfg


def r3gan_config_from_state(g_sd, d_sd):
    """gantry R3ganConfig from the official G/D state dicts (what an importer must do)."""
    stages = sorted({int(k.split(".")[2]) for k in g_sd if k.startswith("Model.MainLayers.")})
    widths, cards, blocks = [], [], []
    expansion = kernel = None
    for s in stages:
        pre = f"Model.MainLayers.{s}.Layers."
        idx = sorted({int(k[len(pre):].split(".")[0]) for k in g_sd if k.startswith(pre)})
        nblocks = len([i for i in idx if f"{pre}{i}.LinearLayer1.Layer.weight" in g_sd])
        if s == 0:
            widths.append(g_sd[pre + "0.Basis"].shape[0])
        else:
            w = g_sd.get(pre + "0.LinearLayer.Layer.weight")
            widths.append(w.shape[0] if w is not None else widths[-1])
        blocks.append(nblocks)
        if nblocks:
            w1 = g_sd[f"{pre}1.LinearLayer1.Layer.weight"]  # [E, C, 1, 1]
            w2 = g_sd[f"{pre}1.LinearLayer2.Layer.weight"]  # [E, E / card, k, k]
            expansion = w1.shape[0] // w1.shape[1]
            kernel = w2.shape[-1]
            cards.append(w2.shape[0] // w2.shape[1])
        else:
            cards.append(cards[-1] if cards else 1)
    z_dim = g_sd["Model.MainLayers.0.Layers.0.LinearLayer.weight"].shape[1]
    cond = "Model.EmbeddingLayer.weight" in g_sd
    if cond:
        emb = g_sd["Model.EmbeddingLayer.weight"].shape[0]
        z_dim -= emb
        assert emb == z_dim, "gantry's G embeds the label to z_dim"
        assert d_sd["Model.EmbeddingLayer.weight"].shape[0] == widths[0], "gantry's D projects at width[0]"
    return dict(z_dim=int(z_dim), widths=widths, cardinality=cards, blocks=blocks, expansion=int(expansion),
                kernel=int(kernel), conditional=cond), dict(num_classes=(g_sd["Model.EmbeddingLayer.weight"].shape[1] if cond else 0))


def official_to_gantry(state_dict, kwargs):
    """Maps an official state dict (of G, G_ema or D) to gantry's checkpoint keys (the twin's
    state_dict keys). `kwargs`: dict(arch='sg2'|'r3gan', net='G'|'D').

    stylegan2-ada-pytorch / AdaptiveMix (same names as gantry; the twin was written to match):
      - drop every `*.resample_filter` buffer (persistent in the official code: the fixed
        [1,3,3,1] filter, outer product / 16; gantry rebuilds it, non-persistent);
      - G: add `pl_mean` = 0 (gantry keeps the path-length EMA in G; the official keeps it in the
        loss object, never in the snapshot);
      - every other key and shape is identical (mapping.fc{i}.weight is stored pre-division by
        lr_multiplier in both; weights are raw, gains applied at run time in both; noise_const
        [res, res] buffers are kept; `mapping.w_avg` kept; D's `b{res}.skip` has no bias);
      - no transposes or reshapes.
    R3GAN (official wrapper `training.networks.Generator/Discriminator` around R3GAN.Networks):
      - strip the wrapper's `Model.` prefix;
      - drop `*.Resampler.Kernel` buffers (the [1,2,1] -> [1,3,3,1] / 64 resampling kernel);
      - every other key and shape identical; no transposes.
    """
    arch, net = kwargs["arch"], kwargs["net"]
    out = collections.OrderedDict()
    for k, v in state_dict.items():
        if arch == "sg2":
            if k.endswith("resample_filter"):
                continue
            out[k] = v
        elif arch == "r3gan":
            assert k.startswith("Model."), k
            k = k[len("Model."):]
            if k.endswith(".Resampler.Kernel"):
                continue
            out[k] = v
        else:
            raise ValueError(arch)
    if arch == "sg2" and net == "G":
        out["pl_mean"] = torch.zeros([]) if isinstance(next(iter(out.values())), torch.Tensor) else np.zeros([], np.float32)
    return out


def verify(name, spec, src, out):
    """Gantry's twin with the translated config reproduces the official outputs."""
    sys.path.insert(0, HERE)
    obj, _ = safe_load(os.path.join(out, name + ".pkl"))
    ref = dict(np.load(os.path.join(out, name + ".npz")))
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))
    sds = {k: collections.OrderedDict((n, t(a)) for n, a in state_dict_of(obj[k]).items()) for k in ["G", "G_ema", "D"]}
    z, x = t(ref["z"]), t(ref["x_real"])
    c = t(ref["c"]) if "c" in ref else None
    diffs = {}
    fp = "_fp32" if "img_ema_fp32" in ref else ""
    if spec["kind"] == "sg2":
        import stylegan2_ref as R
        Gk, Dk = obj["G"].state["_init_kwargs"], obj["D"].state["_init_kwargs"]
        cfg, data, checks, departures = sg2_config(Gk, Dk)
        assert all(checks.values()), checks
        c_dim = data["num_classes"] if cfg["conditional"] else 0
        assert cfg["mapping_lr_mul"] == 0.01  # the twin hard-codes it (gantry's Rust reads it)
        mk = lambda: R.Generator(cfg["z_dim"], cfg["w_dim"], data["resolution"], data["channels"],
                                 mapping_layers=cfg["mapping_layers"], channel_base=cfg["channel_base"],
                                 channel_max=cfg["channel_max"], c_dim=c_dim).eval()
        Ge, Gg = mk(), mk()
        D = R.Discriminator(data["resolution"], data["channels"], channel_base=cfg["channel_base"],
                            channel_max=cfg["channel_max"], mbstd_group_size=cfg["mbstd_group"],
                            mbstd_num_channels=cfg["mbstd_channels"], c_dim=c_dim).eval()
        Ge.load_state_dict(official_to_gantry(sds["G_ema"], dict(arch="sg2", net="G")), strict=True)
        Gg.load_state_dict(official_to_gantry(sds["G"], dict(arch="sg2", net="G")), strict=True)
        D.load_state_dict(official_to_gantry(sds["D"], dict(arch="sg2", net="D")), strict=True)
        with torch.no_grad():
            got = dict(ws=Ge.mapping(z, c),
                       img_ema=Ge(z, c, truncation_psi=1, noise_mode="const"),
                       img_ema_trunc=Ge(z, c, truncation_psi=0.5, noise_mode="const"),
                       img_g=Gg(z, c, noise_mode="const"),
                       d_logits=D(x, c))
        for k, v in got.items():
            kk = k + fp if k + fp in ref else k
            diffs[kk] = float((v - t(ref[kk])).abs().max())
            if fp and k + fp in ref:  # and against the official fp16-on-CPU call, for information
                diffs[k + " (vs official fp16 call)"] = float((v - t(ref[k])).abs().max())
        info = dict(config=cfg, data=data, departures=departures)
    else:
        import r3gan_ref as R
        cfg, data = r3gan_config_from_state(sds["G"], sds["D"])
        lists = (cfg["widths"], cfg["cardinality"], cfg["blocks"])
        classes = data["num_classes"]
        mk = lambda: R.Generator(cfg["z_dim"], IMG_CH, *lists, expansion=cfg["expansion"], kernel=cfg["kernel"], classes=classes).eval()
        Ge, Gg = mk(), mk()
        D = R.Discriminator(IMG_CH, *lists, expansion=cfg["expansion"], kernel=cfg["kernel"], classes=classes).eval()
        Ge.load_state_dict(official_to_gantry(sds["G_ema"], dict(arch="r3gan", net="G")), strict=True)
        Gg.load_state_dict(official_to_gantry(sds["G"], dict(arch="r3gan", net="G")), strict=True)
        D.load_state_dict(official_to_gantry(sds["D"], dict(arch="r3gan", net="D")), strict=True)
        with torch.no_grad():
            got = dict(img_ema=Ge(z, c), img_g=Gg(z, c), d_logits=D(x, c))
        for k, v in got.items():
            kk = k + fp if k + fp in ref else k
            diffs[kk] = float((v - t(ref[kk])).abs().max())
            if fp:
                diffs[k + " (vs official bf16 call)"] = float((v - t(ref[k])).abs().max())
        info = dict(config=cfg, data=data)
    # The safe reader's state equals the official loader's state_dict (checked in build too).
    info["max_abs_diff"] = diffs
    return info


def check_safe_reader(name, spec, src, out):
    """The allow-list reader's state dicts equal the official modules' state_dict()."""
    use_repo(src, spec["repo"])
    import legacy
    with open(os.path.join(out, name + ".pkl"), "rb") as f:
        data = legacy.load_network_pkl(f)
    obj, _ = safe_load(os.path.join(out, name + ".pkl"))
    for key in ["G", "D", "G_ema"] + (["augment_pipe"] if spec["kind"] == "sg2" else []):
        a = data[key].state_dict()
        b = state_dict_of(obj[key])
        assert list(a.keys()) == list(b.keys()), (key, set(a) ^ set(b))
        for k in a:
            assert a[k].dtype == torch.float32 and b[k].dtype == np.float32, k
            assert np.array_equal(a[k].numpy(), b[k]), (key, k)
    return True


# ---------------------------------------------------------------------------------------------

def child(argv):
    subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, check=True)


def child_json(argv):
    r = subprocess.run([sys.executable, os.path.abspath(__file__)] + argv, check=True, capture_output=True, text=True)
    return json.loads(r.stdout.strip().splitlines()[-1])


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--src", required=True, help="folder with the extracted official repositories")
    ap.add_argument("--out", default=DEFAULT_OUT)
    ap.add_argument("--step", default=None, help=argparse.SUPPRESS)
    ap.add_argument("--name", default=None, help=argparse.SUPPRESS)
    a = ap.parse_args()
    torch.set_num_threads(1)
    if a.step == "build":
        spec = FIXTURES[a.name]
        (build_sg2 if spec["kind"] == "sg2" else build_r3gan)(a.name, spec, a.src, a.out)
        return
    if a.step == "hostile":
        build_hostile_persistent(a.src, a.out)
        build_hostile_reduce(a.out)
        return
    if a.step == "verify":
        print(json.dumps(verify(a.name, FIXTURES[a.name], a.src, a.out), default=repr))
        return
    if a.step == "safe":
        print(json.dumps(check_safe_reader(a.name, FIXTURES[a.name], a.src, a.out)))
        return

    os.makedirs(a.out, exist_ok=True)
    common = ["--src", a.src, "--out", a.out]
    for name in FIXTURES:
        child(common + ["--step", "build", "--name", name])
        print(f"built {name}.pkl ({os.path.getsize(os.path.join(a.out, name + '.pkl'))} bytes) and {name}.npz")
    child(common + ["--step", "hostile"])
    print("hostile:", check_hostile(a.src, a.out))

    keys, structure, report = [], [], {}
    for name, spec in FIXTURES.items():
        assert child_json(common + ["--step", "safe", "--name", name])
        text, obj = describe(os.path.join(a.out, name + ".pkl"), name)
        structure.append(text)
        for key in ["G", "D"]:
            keys.append(f"## {name} {key}")
            keys += [f"{k} {list(v.shape)}" for k, v in state_dict_of(obj[key]).items()]
        report[name] = child_json(common + ["--step", "verify", "--name", name])
        print(name, json.dumps(report[name]["max_abs_diff"]))
    print("safe reader on the hostile pickles:", check_safe_on_hostile(a.out))
    text, _ = describe_hostile(os.path.join(a.out, "hostile-persistent.pkl"))
    structure.append(text)
    with open(os.path.join(a.out, "keys.txt"), "w") as f:
        f.write("# Official state-dict keys and shapes (G and D) of each fixture; G_ema has G's keys.\n")
        f.write("\n".join(keys) + "\n")
    with open(os.path.join(a.out, "structure.txt"), "w") as f:
        f.write("# What each pickle holds, read by this script's allow-list unpickler (no code runs).\n")
        f.write("\n\n".join(structure) + "\n")
    with open(os.path.join(a.out, "verify.json"), "w") as f:
        json.dump(report, f, indent=1, default=repr)
        f.write("\n")
    for name, r in report.items():
        worst = max(v for k, v in r["max_abs_diff"].items() if "vs official" not in k)
        assert worst <= 1e-4, (name, r["max_abs_diff"])
    print("all twins reproduce the official outputs to <= 1e-4")


def check_safe_on_hostile(out):
    """The allow-list reader reads hostile-persistent.pkl (no marker: module_src is data) and
    refuses hostile-reduce.pkl (builtins.exec is not allowed)."""
    with tempfile.TemporaryDirectory() as tmp:
        marker = os.path.join(tmp, "marker")
        os.environ["GANTRY_MARKER"] = marker
        try:
            obj, _ = safe_load(os.path.join(out, "hostile-persistent.pkl"))
            assert obj["G"].meta["module_src"].startswith(PAYLOAD)
            try:
                safe_load(os.path.join(out, "hostile-reduce.pkl"))
                refused = False
            except pickle.UnpicklingError as e:
                refused = str(e)
            assert refused and not os.path.exists(marker)
        finally:
            del os.environ["GANTRY_MARKER"]
    return dict(persistent_read_without_marker=True, reduce_refused=refused)


def describe_hostile(path):
    """The persistent hostile pickle read safely: its module_src starts with the payload."""
    obj, globals_ = safe_load(path)
    first = obj["G"].meta["module_src"].splitlines()[:2]
    return (f"== hostile-persistent.pkl ({os.path.getsize(path)} bytes): same layout as sg2ada-uncond.pkl; "
            f"every meta.module_src begins with {first!r}; globals: {sorted(globals_)}\n"
            "== hostile-reduce.pkl: protocol 2; {'G': builtins.exec(<payload>), 'D': posix.system('touch \"$GANTRY_MARKER\"')}"), obj


if __name__ == "__main__":
    main()
