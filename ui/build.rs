//! Builds the viewer's front end (ui/web) with the npm registry's packages, into
//! `$OUT_DIR/dist`, which `src/lib.rs` embeds. Runs as part of every cargo build of this
//! crate, so `cargo run -p weft -- up` needs nothing else than Node.js and npm.
//!
//! ```text
//!  web/package-lock.json ── npm ci (when node_modules is older than the lock) ──> web/node_modules
//!  web/src/**  ── tsc --noEmit (type check) ── vite build ──> $OUT_DIR/dist ──> rust-embed
//! ```

use std::fs::File;
use std::path::{Path, PathBuf};
use std::process::Command;

fn main() {
    let manifest = PathBuf::from(std::env::var("CARGO_MANIFEST_DIR").expect("CARGO_MANIFEST_DIR"));
    let web = manifest.join("web");
    let out = PathBuf::from(std::env::var("OUT_DIR").expect("OUT_DIR")).join("dist");
    for input in [
        "src",
        "index.html",
        "package.json",
        "package-lock.json",
        "vite.config.ts",
        "tsconfig.json",
    ] {
        println!("cargo:rerun-if-changed=web/{input}");
    }

    // Several cargo runs (clippy, test, other target dirs) may build this crate at once;
    // they share web/node_modules, so installs and builds take turns.
    let lock = File::create(web.join(".build.lock")).expect("creating ui/web/.build.lock");
    lock.lock().expect("locking ui/web/.build.lock");

    if needs_install(&web) {
        run(
            Command::new(npm())
                .args(["ci", "--no-audit", "--no-fund", "--prefer-offline"])
                .current_dir(&web),
            "npm ci (installing the viewer's packages from the npm registry)",
        );
    }
    run(
        Command::new("node")
            .args(["node_modules/typescript/bin/tsc", "--noEmit", "-p", "."])
            .current_dir(&web),
        "tsc (type-checking the viewer)",
    );
    run(
        Command::new("node")
            .arg("node_modules/vite/bin/vite.js")
            .args(["build", "--logLevel", "warn", "--emptyOutDir", "--outDir"])
            .arg(&out)
            .current_dir(&web),
        "vite build (bundling the viewer)",
    );
    assert!(
        out.join("index.html").is_file(),
        "vite build produced no index.html in {}",
        out.display()
    );
    precompress(&out.join("assets"));
}

/// Writes `<file>.gz` beside every hashed asset (gzip level 9, once per build) so the
/// server can answer `Accept-Encoding: gzip` without compressing on each request.
fn precompress(dir: &Path) {
    use std::io::Write as _;
    let entries =
        std::fs::read_dir(dir).unwrap_or_else(|e| panic!("reading {}: {e}", dir.display()));
    for entry in entries {
        let path = entry.expect("asset entry").path();
        let compressible = matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("js" | "css" | "svg" | "json" | "html" | "txt")
        );
        if !compressible {
            continue;
        }
        let data = std::fs::read(&path).expect("reading an asset");
        let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
        encoder.write_all(&data).expect("gzip");
        let gz = encoder.finish().expect("gzip");
        let mut target = path.clone().into_os_string();
        target.push(".gz");
        std::fs::write(&target, gz).expect("writing a .gz asset");
    }
}

fn npm() -> String {
    std::env::var("NPM").unwrap_or_else(|_| "npm".to_string())
}

/// node_modules is (re)installed when missing or older than the lock file; npm writes
/// node_modules/.package-lock.json on every install.
fn needs_install(web: &Path) -> bool {
    let modified = |p: &Path| std::fs::metadata(p).and_then(|m| m.modified()).ok();
    match (
        modified(&web.join("node_modules/.package-lock.json")),
        modified(&web.join("package-lock.json")),
    ) {
        (Some(installed), Some(locked)) => installed < locked,
        _ => true,
    }
}

fn run(cmd: &mut Command, what: &str) {
    let status = cmd.status().unwrap_or_else(|e| {
        panic!(
            "{what}: could not start {:?}: {e}. The viewer is built with Node.js (>= 20) and npm; \
             install them (Debian: apt-get install nodejs npm)",
            cmd.get_program()
        )
    });
    assert!(status.success(), "{what} failed with {status}");
}
