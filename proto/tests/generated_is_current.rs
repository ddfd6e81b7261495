//! The generated Rust in `src/gen/` must be exactly what the `.proto` sources produce.
//!
//! The code is checked in so that building Janus needs no `protoc`; this test regenerates it
//! with the vendored `protoc` and fails on any difference. After changing a `.proto` file, run
//! `JANUS_PROTO_BLESS=1 cargo test -p janus-proto --test generated_is_current` to rewrite
//! `src/gen/`, and commit the result.

use std::collections::BTreeMap;
use std::fs;
use std::path::{Path, PathBuf};

fn proto_files(dir: &Path, found: &mut Vec<PathBuf>) {
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            proto_files(&path, found);
        } else if path.extension().is_some_and(|e| e == "proto") {
            found.push(path);
        }
    }
}

fn rust_files(dir: &Path) -> BTreeMap<String, String> {
    fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "rs"))
        .map(|p| {
            (
                p.file_name().unwrap().to_string_lossy().into_owned(),
                fs::read_to_string(&p).unwrap(),
            )
        })
        .collect()
}

#[test]
fn generated_code_is_current() {
    // The checkout as cargo runs the test (the compile-time path can name another checkout when
    // clones share a target directory).
    let root = PathBuf::from(std::env::var_os("CARGO_MANIFEST_DIR").expect("run by cargo test"));
    let sources = root.join("proto");
    let checked_in = root.join("src/gen");
    let mut protos = Vec::new();
    proto_files(&sources, &mut protos);
    protos.sort();

    let out = std::env::temp_dir().join(format!("janus-proto-gen-{}", std::process::id()));
    let _ = fs::remove_dir_all(&out);
    fs::create_dir_all(&out).unwrap();
    let mut config = tonic_prost_build::Config::new();
    config.protoc_executable(env!("JANUS_PROTOC"));
    tonic_prost_build::configure()
        .build_client(true)
        .build_server(true)
        .emit_rerun_if_changed(false)
        .out_dir(&out)
        .compile_with_config(config, &protos, &[sources])
        .unwrap();
    let fresh = rust_files(&out);
    let _ = fs::remove_dir_all(&out);

    if std::env::var_os("JANUS_PROTO_BLESS").is_some() {
        for name in rust_files(&checked_in).keys() {
            fs::remove_file(checked_in.join(name)).unwrap();
        }
        for (name, code) in &fresh {
            fs::write(checked_in.join(name), code).unwrap();
        }
    }
    let current = rust_files(&checked_in);
    assert_eq!(
        current.keys().collect::<Vec<_>>(),
        fresh.keys().collect::<Vec<_>>(),
        "src/gen/ does not hold one file per proto package: run with JANUS_PROTO_BLESS=1"
    );
    for (name, code) in &fresh {
        assert!(
            current[name] == *code,
            "src/gen/{name} is stale: run `JANUS_PROTO_BLESS=1 cargo test -p janus-proto --test generated_is_current`"
        );
    }
}
