//! Gives every binary of this package (the `trainer` binary, unit and
//! integration tests) a run path to the libtorch that torch-sys linked, so
//! they run without LD_LIBRARY_PATH, and links libtorch's CUDA half when the
//! libraries it needs are installed.

use std::path::Path;

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // The CUDA half of libtorch registers itself when loaded; nothing calls
    // into it directly, so the linker's --as-needed would drop it and GPUs
    // would stay invisible. Keep it when this libtorch has one and the NVIDIA
    // libraries it loads (cuDNN, cuBLAS, NCCL...) are installed beside it, as
    // in the full PyPI install (`scripts/setup.sh --full`). The CPU install
    // has libtorch_cuda.so without them: linking it there would give a binary
    // that cannot start, so the trainer is CPU-only then.
    let lib = Path::new(&lib);
    let nvidia = lib.join("../../nvidia");
    if nvidia.exists() {
        // Installing or removing the CUDA libraries changes this folder.
        println!("cargo:rerun-if-changed={}", nvidia.display());
    }
    let cuda_libraries = nvidia.join("cudnn/lib").exists();
    if lib.join("libtorch_cuda.so").exists() && cuda_libraries {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
