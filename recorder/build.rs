//! Passes the target and host triples to the crate's tests, which compile
//! the DEXT capture shim with the `cc` crate outside a build script.

fn main() {
    for var in ["TARGET", "HOST"] {
        if let Ok(v) = std::env::var(var) {
            println!("cargo:rustc-env=SCUZZ_BUILD_{var}={v}");
        }
    }
    println!("cargo:rerun-if-changed=build.rs");
}
