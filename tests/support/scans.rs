//! JPEG scans repeated: the CPU bomb of the hostile-image tests, for the unit tests
//! (`src/imaging/hostile_tests.rs`) and the API tests (`tests/api/hostile.rs`) alike.

/// `jpeg` with its last scan (its last SOS segment and data, up to EOI) appended
/// `copies` more times before EOI.
pub fn repeat_last_scan(jpeg: &[u8], copies: usize) -> Vec<u8> {
    assert!(jpeg.ends_with(&[0xFF, 0xD9]), "ends with EOI");
    let eoi = jpeg.len() - 2;
    let last = jpeg[..eoi]
        .windows(2)
        .rposition(|w| w == [0xFF, 0xDA])
        .expect("a scan");
    let scan = &jpeg[last..eoi];
    let mut out = Vec::with_capacity(jpeg.len() + scan.len() * copies);
    out.extend_from_slice(&jpeg[..eoi]);
    for _ in 0..copies {
        out.extend_from_slice(scan);
    }
    out.extend_from_slice(&[0xFF, 0xD9]);
    out
}
