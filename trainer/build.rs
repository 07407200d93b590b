//! Gives every binary of this package (the `trainer` binary, unit and
//! integration tests) a run path to the libtorch that torch-sys linked, so
//! they run without LD_LIBRARY_PATH.

fn main() {
    println!("cargo:rerun-if-env-changed=DEP_TCH_LIBTORCH_LIB");
    let Ok(lib) = std::env::var("DEP_TCH_LIBTORCH_LIB") else {
        return;
    };
    println!("cargo:rustc-link-arg=-Wl,-rpath,{lib}");
    // The CUDA half of libtorch registers itself when loaded; nothing calls
    // into it directly, so the linker's --as-needed would drop it and GPUs
    // would stay invisible. Keep it when this libtorch has one.
    if std::path::Path::new(&lib).join("libtorch_cuda.so").exists() {
        println!("cargo:rustc-link-arg=-Wl,--no-as-needed,-ltorch_cuda,--as-needed");
    }
}
