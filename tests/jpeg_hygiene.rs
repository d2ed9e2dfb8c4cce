//! JPEG hygiene on real-shaped camera frames: the fixtures in tests/fixtures/jpeg/ are made by
//! libjpeg-turbo and then altered the way UVC cameras alter them (see the README there).
//!
//! Regenerate them (and the fuzz seed corpus) with:
//!     cargo test --test jpeg_hygiene -- --ignored regenerate_fixtures

mod common;

use common::strip_dht;

use std::path::{Path, PathBuf};

use bytes::Bytes;
use camcast::jpeg::{self, JpegError};

const WIDTH: usize = 96;
const HEIGHT: usize = 64;
const PADDING: usize = 512;

fn fixture_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/jpeg")
}

fn fixture(name: &str) -> Bytes {
    let path = fixture_dir().join(name);
    let data = std::fs::read(&path).unwrap_or_else(|e| {
        panic!(
            "{}: {e} (regenerate: cargo test --test jpeg_hygiene -- --ignored regenerate_fixtures)",
            path.display()
        )
    });
    Bytes::from(data)
}

fn decode(jpeg: &[u8]) -> turbojpeg::Image<Vec<u8>> {
    turbojpeg::decompress(jpeg, turbojpeg::PixelFormat::RGB).expect("decodable JPEG")
}

/// (class/id byte, counts and symbols) of every Huffman table before the first scan, sorted.
/// Written independently of camcast's parser so the two can check each other.
fn huffman_tables(jpeg: &[u8]) -> Vec<(u8, Vec<u8>)> {
    let mut tables = Vec::new();
    for (marker, body) in segments_before_scan(jpeg) {
        if marker != 0xC4 {
            continue;
        }
        let mut body = body;
        while !body.is_empty() {
            let n: usize = body[1..17].iter().map(|&c| usize::from(c)).sum();
            tables.push((body[0], body[1..17 + n].to_vec()));
            body = &body[17 + n..];
        }
    }
    tables.sort();
    tables
}

/// (marker code, payload) of each segment between SOI and the first SOS.
fn segments_before_scan(jpeg: &[u8]) -> Vec<(u8, &[u8])> {
    let mut out = Vec::new();
    let mut pos = 2;
    while jpeg[pos + 1] != 0xDA {
        let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
        out.push((jpeg[pos + 1], &jpeg[pos + 4..pos + 2 + len]));
        pos += 2 + len;
    }
    out
}

#[test]
fn fixtures_are_what_their_names_say() {
    let valid = jpeg::inspect(&fixture("valid.jpg")).unwrap();
    assert!(valid.has_dht);
    assert_eq!(
        (valid.width as usize, valid.height as usize),
        (WIDTH, HEIGHT)
    );
    let stripped = jpeg::inspect(&fixture("no_dht.jpg")).unwrap();
    assert!(!stripped.has_dht);
    assert!(huffman_tables(&fixture("no_dht.jpg")).is_empty());
    let padded = jpeg::inspect(&fixture("padded.jpg")).unwrap();
    assert_eq!(padded.trailing_padding, PADDING);
    let uvc = jpeg::inspect(&fixture("uvc_no_dht_padded.jpg")).unwrap();
    assert!(!uvc.has_dht && uvc.trailing_padding == PADDING);
    assert!(
        jpeg::inspect(&fixture("progressive.jpg"))
            .unwrap()
            .progressive
    );
}

#[test]
fn valid_jpeg_comes_back_byte_and_pointer_identical() {
    let input = fixture("valid.jpg");
    let out = jpeg::repair(input.clone()).unwrap();
    assert_eq!(out, input);
    assert_eq!(
        out.as_ptr(),
        input.as_ptr(),
        "a valid JPEG must not be copied"
    );
    assert_eq!(out.len(), input.len());
}

#[test]
fn dht_less_jpeg_is_repaired_with_the_tables_it_was_encoded_with() {
    let original = fixture("valid.jpg");
    let out = jpeg::repair(fixture("no_dht.jpg")).unwrap();
    let info = jpeg::inspect(&out).unwrap();
    assert!(info.has_dht, "repair must add the tables");
    // libjpeg-turbo tolerates missing tables (it assumes the standard ones), so equal pixels
    // alone would not prove the repair; the tables themselves must be the encoder's.
    assert_eq!(huffman_tables(&out), huffman_tables(&original));
    let (a, b) = (decode(&original), decode(&out));
    assert_eq!((b.width, b.height), (WIDTH, HEIGHT));
    assert!(
        a.pixels == b.pixels,
        "repaired JPEG decodes to different pixels"
    );
    // Everything but the tables is the camera's own bytes, in order.
    let kept: Vec<_> = segments_before_scan(&out)
        .into_iter()
        .filter(|(m, _)| *m != 0xC4)
        .collect();
    assert_eq!(kept, segments_before_scan(&fixture("no_dht.jpg")));
}

#[test]
fn padding_after_eoi_is_trimmed_without_a_copy() {
    let input = fixture("padded.jpg");
    let out = jpeg::repair(input.clone()).unwrap();
    assert_eq!(out, fixture("valid.jpg"));
    assert_eq!(
        out.as_ptr(),
        input.as_ptr(),
        "trimming must slice, not copy"
    );
}

#[test]
fn uvc_shaped_frame_gets_both_repairs() {
    let out = jpeg::repair(fixture("uvc_no_dht_padded.jpg")).unwrap();
    assert_eq!(out, jpeg::repair(fixture("no_dht.jpg")).unwrap());
    assert_eq!(jpeg::inspect(&out).unwrap().trailing_padding, 0);
}

#[test]
fn progressive_jpeg_passes_untouched() {
    let input = fixture("progressive.jpg");
    let out = jpeg::repair(input.clone()).unwrap();
    assert_eq!(out.as_ptr(), input.as_ptr());
    assert_eq!(decode(&out).width, WIDTH);
}

#[test]
fn truncated_frame_is_an_error_that_says_so() {
    let err = jpeg::repair(fixture("truncated.jpg")).unwrap_err();
    assert!(matches!(err, JpegError::Truncated { .. }), "{err:?}");
    let msg = err.to_string();
    assert!(msg.starts_with("truncated JPEG:"), "{msg}");
    assert!(
        msg.contains(&format!("{} bytes", fixture("truncated.jpg").len())),
        "{msg}"
    );
}

#[test]
fn garbage_is_an_error_that_says_so() {
    let err = jpeg::repair(fixture("garbage.bin")).unwrap_err();
    assert!(
        err.to_string().starts_with("not a JPEG: data starts with"),
        "{err}"
    );
}

/// The fixture picture: gradients plus sharp-edged blocks, so the scan uses many codes.
fn picture() -> Vec<u8> {
    let mut rgb = Vec::with_capacity(WIDTH * HEIGHT * 3);
    for y in 0..HEIGHT {
        for x in 0..WIDTH {
            let block = (x / 16 + y / 16) % 3;
            rgb.extend_from_slice(&[
                (x * 255 / WIDTH) as u8,
                (y * 255 / HEIGHT) as u8,
                [40u8, 160, 250][block],
            ]);
        }
    }
    rgb
}

fn encode(progressive: bool) -> Vec<u8> {
    let pixels = picture();
    let mut c = turbojpeg::Compressor::new().unwrap();
    c.set_quality(85).unwrap();
    c.set_subsamp(turbojpeg::Subsamp::Sub2x2).unwrap();
    c.set_progressive(progressive).unwrap();
    c.compress_to_vec(turbojpeg::Image {
        pixels: &pixels[..],
        width: WIDTH,
        pitch: WIDTH * 3,
        height: HEIGHT,
        format: turbojpeg::PixelFormat::RGB,
    })
    .unwrap()
}

fn garbage() -> Vec<u8> {
    let mut state = 0x9E37_79B9_7F4A_7C15u64;
    (0..512)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            (state >> 24) as u8
        })
        .collect()
}

#[test]
#[ignore = "writes the fixtures; run by hand after changing how they are made"]
fn regenerate_fixtures() {
    let valid = encode(false);
    let no_dht = strip_dht(&valid);
    let pad = |v: &[u8]| [v, &[0u8; PADDING][..]].concat();
    let files: Vec<(&str, Vec<u8>)> = vec![
        ("valid.jpg", valid.clone()),
        ("no_dht.jpg", no_dht.clone()),
        ("padded.jpg", pad(&valid)),
        ("uvc_no_dht_padded.jpg", pad(&no_dht)),
        ("truncated.jpg", valid[..valid.len() * 2 / 3].to_vec()),
        ("garbage.bin", garbage()),
        ("progressive.jpg", encode(true)),
    ];
    let corpus = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/jpeg_repair");
    for dir in [fixture_dir(), corpus] {
        std::fs::create_dir_all(&dir).unwrap();
        for (name, data) in &files {
            std::fs::write(dir.join(name), data).unwrap();
        }
    }
}
