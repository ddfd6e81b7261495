//! Hands the path of the vendored `protoc` to the `generated_is_current` test, and makes sure
//! cargo always downloads it (scripts/protoc relies on that for etcd-client's build script).

fn main() {
    let protoc = protoc_bin_vendored::protoc_bin_path()
        .expect("protoc-bin-vendored ships a protoc for this platform");
    println!("cargo:rustc-env=JANUS_PROTOC={}", protoc.display());
    println!("cargo:rerun-if-changed=build.rs");
}
