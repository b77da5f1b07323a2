// Keeps libtorch_cuda in the binary: without --no-as-needed the linker drops libtorch.so (no symbol
// is referenced directly), CUDA kernels never register and `--device cuda` reports no GPU.
// Also records libtorch's directory as an rpath so the binary runs without LD_LIBRARY_PATH, and
// compiles the C++ shim against the same libtorch headers: csrc/ops.cpp (native ops tch lacks)
// and csrc/dist.cpp (torch's c10d stores, process groups and collectives; see its header for why
// gloo's headers come from Debian's libgloo-dev, or GANTRY_GLOO_INCLUDE, and when NCCL is built).
use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=csrc/ops.cpp");
    println!("cargo:rerun-if-changed=csrc/dist.cpp");
    println!("cargo:rerun-if-env-changed=GANTRY_GLOO_INCLUDE");
    println!("cargo:rerun-if-env-changed=GANTRY_NO_NCCL");
    let lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports libtorch's lib directory");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let root = Path::new(&lib)
        .parent()
        .expect("lib has a parent")
        .to_path_buf();
    // The C++ ABI must match libtorch's; ask the same python torch-sys asked.
    let abi = std::process::Command::new(
        std::env::var("PYTHON_SYS_EXECUTABLE").unwrap_or_else(|_| "python3".into()),
    )
    .args([
        "-c",
        "import torch; print(int(torch._C._GLIBCXX_USE_CXX11_ABI))",
    ])
    .output()
    .ok()
    .filter(|o| o.status.success())
    .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
    .unwrap_or_else(|| "1".into());
    let base = || {
        let mut b = cc::Build::new();
        b.cpp(true)
            .pic(true)
            .warnings(false)
            .include(root.join("include"))
            .include(root.join("include/torch/csrc/api/include"))
            .flag("-std=c++17")
            .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"));
        b
    };
    base().file("csrc/ops.cpp").compile("gantry_ops");

    let mut dist = base();
    dist.file("csrc/dist.cpp");
    match gloo_include() {
        Some(dir) => {
            dist.include(dir)
                .define("USE_C10D_GLOO", None)
                .define("GANTRY_GLOO", None);
        }
        None => println!(
            "cargo:warning=gloo's headers not found (Debian's libgloo-dev, or GANTRY_GLOO_INCLUDE: docs/distributed.md): gantry builds without multi-process training on CPU"
        ),
    }
    // NCCL: the torch wheel's CUDA and NCCL headers live beside it in site-packages/nvidia (and
    // the `crt/` headers CUDA's runtime header includes, in triton's copy of them).
    let site = root.parent().map(Path::to_path_buf);
    let nvidia = site.as_ref().map(|p| p.join("nvidia"));
    let nccl_dirs = nvidia
        .map(|n| (n.join("cu13/include"), n.join("nccl/include")))
        .filter(|(cuda, nccl)| {
            cuda.join("cuda_runtime_api.h").exists() && nccl.join("nccl.h").exists()
        });
    if let (Some((cuda, nccl)), false) = (nccl_dirs, std::env::var_os("GANTRY_NO_NCCL").is_some()) {
        let mut with_nccl = dist.clone();
        with_nccl.include(cuda).include(nccl);
        if let Some(crt) = site
            .map(|s| s.join("triton/backends/nvidia/include"))
            .filter(|d| d.join("crt/host_config.h").exists())
        {
            with_nccl.include(crt);
        }
        with_nccl
            .define("USE_C10D_NCCL", None)
            .define("GANTRY_NCCL", None);
        if with_nccl.try_compile("gantry_dist").is_ok() {
            println!("cargo:rustc-link-lib=dylib=torch_cuda");
            println!("cargo:rustc-link-lib=dylib=c10_cuda");
            return;
        }
        println!("cargo:warning=the NCCL bridge did not compile: gantry builds without NCCL");
    }
    dist.compile("gantry_dist");
}

/// gloo's headers: `$GANTRY_GLOO_INCLUDE`, or Debian's libgloo-dev in /usr/include (see
/// docs/distributed.md for a route without root). Each directory probed is watched, so that
/// headers installed (or updated) after a build are picked up by the next `cargo build`: its
/// `gloo/` when there is one, else the directory itself (creating `gloo/` in it changes its
/// modification time, which cargo's scan of a watched directory sees even when the unpacked files
/// keep their packaged, older, times).
fn gloo_include() -> Option<PathBuf> {
    let candidates: Vec<PathBuf> = std::env::var_os("GANTRY_GLOO_INCLUDE")
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .into_iter()
        .chain([PathBuf::from("/usr/include")])
        .collect();
    for dir in &candidates {
        let gloo = dir.join("gloo");
        // A path that does not exist is not watched: cargo would rerun this script every build.
        if gloo.is_dir() {
            println!("cargo:rerun-if-changed={}", gloo.display());
        } else if dir.is_dir() {
            println!("cargo:rerun-if-changed={}", dir.display());
        }
    }
    if let Some(dir) = std::env::var_os("GANTRY_GLOO_INCLUDE").filter(|v| !v.is_empty()) {
        if !Path::new(&dir).join("gloo/algorithm.h").exists() {
            println!(
                "cargo:warning=GANTRY_GLOO_INCLUDE={} has no gloo/algorithm.h (it should name the directory that holds gloo/)",
                Path::new(&dir).display()
            );
        }
    }
    candidates
        .into_iter()
        .find(|d| d.join("gloo/algorithm.h").exists())
}
