// Keeps libtorch_cuda in the binary: without --no-as-needed the linker drops libtorch.so (no symbol
// is referenced directly), CUDA kernels never register and `--device cuda` reports no GPU.
// Also records libtorch's directory as an rpath so the binary runs without LD_LIBRARY_PATH.
fn main() {
    println!("cargo:rustc-link-arg=-Wl,--no-as-needed");
    println!("cargo:rustc-link-arg=-ltorch");
    if let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") {
        println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    }
}
