//! The imaging tests' one way to read a file of `tests/fixtures/`.

/// The bytes of `tests/fixtures/imaging/{name}`; a missing fixture fails the test
/// with its path.
pub(crate) fn fixture(name: &str) -> Vec<u8> {
    fixture_file(&format!("imaging/{name}"))
}

/// The bytes of `tests/fixtures/{path}`.
pub(crate) fn fixture_file(path: &str) -> Vec<u8> {
    let path = format!("{}/tests/fixtures/{path}", env!("CARGO_MANIFEST_DIR"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("cannot read {path}: {e}"))
}
