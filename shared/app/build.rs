//! Compiles the provider's catalog into every function (catalog as code: no file to ship, no
//! I/O at init). The file is the repository's `catalog.json` — the provider's own, not the
//! demo's `examples/catalog.json` — or the path in `TOLLGATE_CATALOG_FILE` at build time
//! (relative paths from the repository root), e.g. `TOLLGATE_CATALOG_FILE=catalogs/prod.json
//! sam build`.

use std::path::{Path, PathBuf};

fn main() {
    println!("cargo:rerun-if-env-changed=TOLLGATE_CATALOG_FILE");
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let path = match std::env::var_os("TOLLGATE_CATALOG_FILE") {
        Some(p) if Path::new(&p).is_absolute() => PathBuf::from(p),
        Some(p) => root.join(p),
        None => root.join("catalog.json"),
    };
    println!("cargo:rerun-if-changed={}", path.display());
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| {
        panic!(
            "the catalog compiled into the functions, {}, cannot be read: {e} \
             (set TOLLGATE_CATALOG_FILE to its path)",
            path.display()
        )
    });
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    std::fs::write(out.join("catalog.json"), text).expect("OUT_DIR is writable");
}
