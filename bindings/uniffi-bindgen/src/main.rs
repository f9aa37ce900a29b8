//! `cargo run -p uniffi-bindgen -- generate --library <cdylib> --language kotlin|swift
//! --out-dir <dir>`: the generator pinned to the uniffi version the library uses, so the
//! generated sources and the scaffolding always match.

fn main() {
    uniffi::uniffi_bindgen_main()
}
