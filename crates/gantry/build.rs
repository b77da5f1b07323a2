// Keeps libtorch_cuda in the binary: without --no-as-needed the linker drops libtorch.so (no symbol
// is referenced directly), CUDA kernels never register and `--device cuda` reports no GPU.
// Also records libtorch's directory as an rpath so the binary runs without LD_LIBRARY_PATH, and
// compiles csrc/ops.cpp (native ops tch lacks) against the same libtorch headers.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    println!("cargo:rerun-if-changed=csrc/ops.cpp");
    let lib =
        std::env::var("DEP_TCH_LIBTORCH_LIB").expect("torch-sys reports libtorch's lib directory");
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    let root = std::path::Path::new(&lib)
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
    cc::Build::new()
        .cpp(true)
        .pic(true)
        .warnings(false)
        .include(root.join("include"))
        .flag("-std=c++17")
        .flag(format!("-D_GLIBCXX_USE_CXX11_ABI={abi}"))
        .file("csrc/ops.cpp")
        .compile("gantry_ops");
}
