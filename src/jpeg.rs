//! JPEG hygiene for MJPEG passthrough: a camera's JPEG goes to viewers untouched except for the
//! two repairs real UVC cameras need.
//!
//! - Many UVC cameras omit the Huffman tables (DHT) and rely on the decoder knowing the standard
//!   ones (the AVI1 / MJPEG convention). Browsers and many decoders reject such files, so
//!   [`repair`] inserts the standard tables of ITU-T T.81 Annex K.3 before the first scan, as
//!   every MJPEG-to-JPEG converter does.
//! - Some drivers report the whole buffer as used, leaving zero padding after EOI; [`repair`]
//!   trims it with a zero-copy [`Bytes::slice`].
//!
//! [`inspect`] walks the marker structure once, in time linear in the input, and never reads out
//! of bounds: the input is a device buffer and must be treated as hostile.

use bytes::Bytes;

use crate::frame_pool::FramePool;

const SOI: u8 = 0xD8;
const EOI: u8 = 0xD9;
const SOS: u8 = 0xDA;
const DHT: u8 = 0xC4;
const TEM: u8 = 0x01;

/// What [`inspect`] found in a structurally valid JPEG.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct JpegInfo {
    pub width: u16,
    pub height: u16,
    /// Colour components in the frame (1 = greyscale, 3 = YCbCr).
    pub components: u8,
    /// Sample precision in bits (8 for every camera we know).
    pub precision: u8,
    pub progressive: bool,
    /// A DHT segment appears before the first scan.
    pub has_dht: bool,
    /// Number of scans (1 for baseline, several for progressive).
    pub scans: u32,
    /// Offset of the first SOS marker: where missing Huffman tables go.
    pub first_scan_at: usize,
    /// Length of the JPEG proper, SOI through EOI.
    pub len: usize,
    /// Zero bytes after EOI (padding some UVC drivers leave in the buffer).
    pub trailing_padding: usize,
    /// Highest Huffman table selector any scan uses; the standard tables define 0 and 1 only.
    pub max_table_selector: u8,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum JpegError {
    #[error("not a JPEG: data starts with {found} instead of SOI (FF D8)")]
    NotJpeg { found: String },
    #[error("truncated JPEG: {what} at byte {at} runs past the end of the data ({len} bytes)")]
    Truncated {
        what: &'static str,
        at: usize,
        len: usize,
    },
    #[error("corrupt JPEG: expected a marker (FF xx) at byte {at}, found {found:#04x}")]
    ExpectedMarker { at: usize, found: u8 },
    #[error("corrupt JPEG: marker FF {marker:02X} ({name}) at byte {at} is not allowed here", name = marker_name(*.marker))]
    MisplacedMarker { at: usize, marker: u8 },
    #[error("corrupt JPEG: {name} segment at byte {at}: {reason}", name = marker_name(*.marker))]
    BadSegment {
        at: usize,
        marker: u8,
        reason: &'static str,
    },
    #[error("incomplete JPEG: no {0}")]
    Missing(&'static str),
    #[error("JPEG declares a zero dimension ({width}x{height})")]
    ZeroSize { width: u16, height: u16 },
    #[error("unsupported JPEG: {name} frame (FF {marker:02X}); cameras send baseline JPEG", name = marker_name(*.marker))]
    UnsupportedFrame { marker: u8 },
    #[error("corrupt JPEG: non-zero data at byte {at}, after EOI at byte {eoi_end}")]
    TrailingData { at: usize, eoi_end: usize },
    #[error("cannot insert standard Huffman tables: {0}")]
    CannotRepair(&'static str),
}

/// Walks the marker structure of `data` and reports what it found, or why it is not a JPEG a
/// viewer can decode. Linear time; never panics.
pub fn inspect(data: &[u8]) -> Result<JpegInfo, JpegError> {
    if !data.starts_with(&[0xFF, SOI]) {
        return Err(JpegError::NotJpeg {
            found: hex_prefix(data),
        });
    }
    let mut walk = Walk::default();
    let mut pos = 2;
    loop {
        let marker = read_marker(data, pos)?;
        pos = match marker.code {
            EOI => return walk.finish(data, marker.end),
            SOI | TEM | 0x00 | 0xD0..=0xD7 => {
                return Err(JpegError::MisplacedMarker {
                    at: marker.start,
                    marker: marker.code,
                })
            }
            SOS => {
                let body = segment_body(data, &marker)?;
                walk.scan(&marker, body)?;
                skip_entropy_coded_data(data, marker.end + 2 + body.len())?
            }
            _ => {
                let body = segment_body(data, &marker)?;
                walk.segment(&marker, body)?;
                marker.end + 2 + body.len()
            }
        };
    }
}

/// Makes a camera JPEG safe to hand to any decoder: validates it, inserts the standard Huffman
/// tables if it has none, and trims padding after EOI. Returns `data` itself (no copy) when
/// nothing needs changing and a zero-copy slice when only padding is trimmed.
pub fn repair(data: Bytes) -> Result<Bytes, JpegError> {
    repair_with_info(data).map(|(jpeg, _)| jpeg)
}

/// [`repair`], also returning the [`JpegInfo`] of the result (what `inspect` would say about it).
pub fn repair_with_info(data: Bytes) -> Result<(Bytes, JpegInfo), JpegError> {
    let mut info = inspect(&data)?;
    let end = info.len;
    info.trailing_padding = 0;
    if info.has_dht {
        let jpeg = if end == data.len() {
            data
        } else {
            data.slice(..end)
        };
        return Ok((jpeg, info));
    }
    let (parts, info) = with_standard_tables(&data, info)?;
    Ok((Bytes::from(parts.concat()), info))
}

/// [`repair_with_info`] for a borrowed buffer (a V4L2 driver buffer that goes back to the
/// driver): exactly one copy, into a buffer from `pool`, whatever the repair: padding left
/// behind, tables inserted on the way.
pub fn repair_from_slice(data: &[u8], pool: &FramePool) -> Result<(Bytes, JpegInfo), JpegError> {
    let mut info = inspect(data)?;
    info.trailing_padding = 0;
    if info.has_dht {
        return Ok((pool.gather(&[&data[..info.len]]), info));
    }
    let (parts, info) = with_standard_tables(data, info)?;
    Ok((pool.gather(&parts), info))
}

/// The pieces of the JPEG rebuilt with the standard Huffman tables before its first scan, and
/// what `inspect` would say of it.
fn with_standard_tables(
    data: &[u8],
    mut info: JpegInfo,
) -> Result<([&[u8]; 3], JpegInfo), JpegError> {
    check_standard_tables_fit(&info)?;
    let (at, end) = (info.first_scan_at, info.len);
    info.has_dht = true;
    info.len += STANDARD_DHT.len();
    info.first_scan_at += STANDARD_DHT.len();
    Ok(([&data[..at], &STANDARD_DHT, &data[at..end]], info))
}

/// The Annex K tables are for 8-bit samples and define tables 0 (luma) and 1 (chroma) only.
fn check_standard_tables_fit(info: &JpegInfo) -> Result<(), JpegError> {
    if info.precision != 8 {
        return Err(JpegError::CannotRepair(
            "the standard tables are for 8-bit samples only",
        ));
    }
    if info.max_table_selector > 1 {
        return Err(JpegError::CannotRepair(
            "a scan uses Huffman tables 2 or 3, which have no standard definition",
        ));
    }
    Ok(())
}

/// A marker: `start` is its first 0xFF (fill bytes included), `end` the offset just past its code.
struct Marker {
    start: usize,
    code: u8,
    end: usize,
}

/// Reads the marker at `pos`, skipping 0xFF fill bytes (T.81 B.1.1.2).
fn read_marker(data: &[u8], pos: usize) -> Result<Marker, JpegError> {
    match data.get(pos) {
        Some(0xFF) => {}
        Some(&found) => return Err(JpegError::ExpectedMarker { at: pos, found }),
        None => return Err(truncated("next marker (no EOI)", pos, data)),
    }
    let fill = data[pos..].iter().take_while(|&&b| b == 0xFF).count();
    match data.get(pos + fill) {
        Some(&code) => Ok(Marker {
            start: pos,
            code,
            end: pos + fill + 1,
        }),
        None => Err(truncated("marker", pos, data)),
    }
}

/// The payload of the segment whose marker ends at `marker.end` (after the 2-byte length).
fn segment_body<'a>(data: &'a [u8], marker: &Marker) -> Result<&'a [u8], JpegError> {
    let at = marker.end;
    let len = match data.get(at..at + 2) {
        Some(b) => usize::from(u16::from_be_bytes([b[0], b[1]])),
        None => return Err(truncated("segment length", at, data)),
    };
    if len < 2 {
        return Err(bad(marker, "length is below 2"));
    }
    data.get(at + 2..at + len)
        .ok_or_else(|| truncated(segment_what(marker.code), marker.start, data))
}

/// Skips a scan's entropy-coded data; returns the offset of the marker that ends it.
/// Inside a scan 0xFF is followed by 0x00 (a stuffed data byte), RSTn, or more 0xFF fill bytes;
/// any other code is the next marker.
fn skip_entropy_coded_data(data: &[u8], start: usize) -> Result<usize, JpegError> {
    let mut i = start;
    loop {
        // memchr scans a vector register at a time: this walk is most of a passthrough
        // frame's cost on the capture thread.
        let Some(ff) = memchr::memchr(0xFF, &data[i..]).map(|n| i + n) else {
            return Err(truncated("scan data (no EOI)", start, data));
        };
        match data.get(ff + 1) {
            None => return Err(truncated("scan data (no EOI)", start, data)),
            Some(0x00) | Some(0xD0..=0xD7) => i = ff + 2,
            Some(0xFF) => i = ff + 1,
            Some(_) => return Ok(ff),
        }
    }
}

/// State gathered while walking the segments.
#[derive(Default)]
struct Walk {
    frame: Option<Frame>,
    has_dht: bool,
    first_scan_at: Option<usize>,
    scans: u32,
    max_table_selector: u8,
}

struct Frame {
    width: u16,
    height: u16,
    components: u8,
    precision: u8,
    progressive: bool,
}

impl Walk {
    fn segment(&mut self, marker: &Marker, body: &[u8]) -> Result<(), JpegError> {
        match marker.code {
            0xC0..=0xC2 => self.frame_header(marker, body),
            0xC3 | 0xC5..=0xC7 | 0xC9..=0xCB | 0xCD..=0xCF => Err(JpegError::UnsupportedFrame {
                marker: marker.code,
            }),
            DHT => {
                check_huffman_tables(marker, body)?;
                self.has_dht |= self.scans == 0;
                Ok(())
            }
            _ => Ok(()),
        }
    }

    fn frame_header(&mut self, marker: &Marker, body: &[u8]) -> Result<(), JpegError> {
        if self.frame.is_some() {
            return Err(JpegError::MisplacedMarker {
                at: marker.start,
                marker: marker.code,
            });
        }
        if body.len() < 6 {
            return Err(bad(marker, "shorter than a frame header"));
        }
        let components = body[5];
        if !(1..=4).contains(&components) {
            return Err(bad(marker, "component count is not 1 to 4"));
        }
        if body.len() != 6 + 3 * usize::from(components) {
            return Err(bad(marker, "length does not match the component count"));
        }
        let height = u16::from_be_bytes([body[1], body[2]]);
        let width = u16::from_be_bytes([body[3], body[4]]);
        if width == 0 || height == 0 {
            return Err(JpegError::ZeroSize { width, height });
        }
        self.frame = Some(Frame {
            width,
            height,
            components,
            precision: body[0],
            progressive: marker.code == 0xC2,
        });
        Ok(())
    }

    fn scan(&mut self, marker: &Marker, body: &[u8]) -> Result<(), JpegError> {
        if self.frame.is_none() {
            return Err(JpegError::Missing(
                "frame header (SOF) before the first scan",
            ));
        }
        let count = body.first().copied().unwrap_or(0);
        if !(1..=4).contains(&count) {
            return Err(bad(marker, "component count is not 1 to 4"));
        }
        let count = usize::from(count);
        if body.len() != 4 + 2 * count {
            return Err(bad(marker, "length does not match the component count"));
        }
        for selectors in body[1..1 + 2 * count].iter().skip(1).step_by(2) {
            let highest = (selectors >> 4).max(selectors & 0x0F);
            self.max_table_selector = self.max_table_selector.max(highest);
        }
        self.first_scan_at.get_or_insert(marker.start);
        self.scans += 1;
        Ok(())
    }

    fn finish(self, data: &[u8], eoi_end: usize) -> Result<JpegInfo, JpegError> {
        let (Some(frame), Some(first_scan_at)) = (self.frame, self.first_scan_at) else {
            return Err(JpegError::Missing("scan (SOS) before EOI"));
        };
        if let Some(n) = first_non_zero(&data[eoi_end..]) {
            return Err(JpegError::TrailingData {
                at: eoi_end + n,
                eoi_end,
            });
        }
        Ok(JpegInfo {
            width: frame.width,
            height: frame.height,
            components: frame.components,
            precision: frame.precision,
            progressive: frame.progressive,
            has_dht: self.has_dht,
            scans: self.scans,
            first_scan_at,
            len: eoi_end,
            trailing_padding: data.len() - eoi_end,
            max_table_selector: self.max_table_selector,
        })
    }
}

/// The offset of the first non-zero byte. Some UVC cameras report the whole buffer as used, so
/// the padding after EOI can be megabytes: whole blocks are OR-ed together without an early
/// exit (which the compiler vectorises) before the one non-zero block is searched byte by byte.
fn first_non_zero(data: &[u8]) -> Option<usize> {
    const BLOCK: usize = 256;
    let block = data
        .chunks(BLOCK)
        .position(|chunk| chunk.iter().fold(0u8, |acc, &b| acc | b) != 0)?;
    let start = block * BLOCK;
    data[start..]
        .iter()
        .position(|&b| b != 0)
        .map(|n| start + n)
}

/// Checks that a DHT segment is a sequence of well-formed tables filling it exactly.
fn check_huffman_tables(marker: &Marker, mut body: &[u8]) -> Result<(), JpegError> {
    if body.is_empty() {
        return Err(bad(marker, "holds no table"));
    }
    while let Some((&class_id, rest)) = body.split_first() {
        if (class_id >> 4) > 1 || (class_id & 0x0F) > 3 {
            return Err(bad(marker, "table class or id out of range"));
        }
        let Some(counts) = rest.get(..16) else {
            return Err(bad(marker, "table is cut short"));
        };
        let symbols: usize = counts.iter().map(|&c| usize::from(c)).sum();
        if symbols > 256 {
            return Err(bad(marker, "table has more than 256 symbols"));
        }
        body = rest
            .get(16 + symbols..)
            .ok_or_else(|| bad(marker, "table is cut short"))?;
    }
    Ok(())
}

fn truncated(what: &'static str, at: usize, data: &[u8]) -> JpegError {
    JpegError::Truncated {
        what,
        at,
        len: data.len(),
    }
}

fn bad(marker: &Marker, reason: &'static str) -> JpegError {
    JpegError::BadSegment {
        at: marker.start,
        marker: marker.code,
        reason,
    }
}

fn segment_what(code: u8) -> &'static str {
    match code {
        0xC0..=0xC2 => "frame header (SOF)",
        DHT => "Huffman table (DHT) segment",
        0xDB => "quantisation table (DQT) segment",
        SOS => "scan header (SOS)",
        _ => "segment",
    }
}

/// Short human name of a marker code, for error messages.
pub fn marker_name(code: u8) -> &'static str {
    match code {
        0xC0 => "SOF0 baseline",
        0xC1 => "SOF1 extended",
        0xC2 => "SOF2 progressive",
        0xC3 => "SOF3 lossless",
        0xC5..=0xC7 => "hierarchical",
        0xC9..=0xCB | 0xCD..=0xCF => "arithmetic-coded",
        DHT => "DHT",
        0xCC => "DAC",
        0xD0..=0xD7 => "RST",
        SOI => "SOI",
        EOI => "EOI",
        SOS => "SOS",
        0xDB => "DQT",
        0xDD => "DRI",
        0xE0..=0xEF => "APPn",
        0xFE => "COM",
        TEM => "TEM",
        0x00 => "stuffed zero",
        _ => "unknown",
    }
}

fn hex_prefix(data: &[u8]) -> String {
    if data.is_empty() {
        return "nothing (empty buffer)".into();
    }
    let shown: Vec<String> = data.iter().take(4).map(|b| format!("{b:02X}")).collect();
    shown.join(" ")
}

// The standard Huffman tables of ITU-T T.81 Annex K.3 (tables K.3 to K.6): code-length counts
// for lengths 1..=16, then symbols. libjpeg-turbo's jstdhuff.c holds the same values; a test
// checks ours against what it emits.
const DC_LUMA_COUNTS: [u8; 16] = [0, 1, 5, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0, 0, 0];
const DC_CHROMA_COUNTS: [u8; 16] = [0, 3, 1, 1, 1, 1, 1, 1, 1, 1, 1, 0, 0, 0, 0, 0];
const DC_SYMBOLS: [u8; 12] = [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11];
const AC_LUMA_COUNTS: [u8; 16] = [0, 2, 1, 3, 3, 2, 4, 3, 5, 5, 4, 4, 0, 0, 1, 0x7d];
#[rustfmt::skip]
const AC_LUMA_SYMBOLS: [u8; 162] = [
    0x01, 0x02, 0x03, 0x00, 0x04, 0x11, 0x05, 0x12, 0x21, 0x31, 0x41, 0x06, 0x13, 0x51, 0x61, 0x07,
    0x22, 0x71, 0x14, 0x32, 0x81, 0x91, 0xa1, 0x08, 0x23, 0x42, 0xb1, 0xc1, 0x15, 0x52, 0xd1, 0xf0,
    0x24, 0x33, 0x62, 0x72, 0x82, 0x09, 0x0a, 0x16, 0x17, 0x18, 0x19, 0x1a, 0x25, 0x26, 0x27, 0x28,
    0x29, 0x2a, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48, 0x49,
    0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68, 0x69,
    0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x83, 0x84, 0x85, 0x86, 0x87, 0x88, 0x89,
    0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5, 0xa6, 0xa7,
    0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3, 0xc4, 0xc5,
    0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda, 0xe1, 0xe2,
    0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf1, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];
const AC_CHROMA_COUNTS: [u8; 16] = [0, 2, 1, 2, 4, 4, 3, 4, 7, 5, 4, 4, 0, 1, 2, 0x77];
#[rustfmt::skip]
const AC_CHROMA_SYMBOLS: [u8; 162] = [
    0x00, 0x01, 0x02, 0x03, 0x11, 0x04, 0x05, 0x21, 0x31, 0x06, 0x12, 0x41, 0x51, 0x07, 0x61, 0x71,
    0x13, 0x22, 0x32, 0x81, 0x08, 0x14, 0x42, 0x91, 0xa1, 0xb1, 0xc1, 0x09, 0x23, 0x33, 0x52, 0xf0,
    0x15, 0x62, 0x72, 0xd1, 0x0a, 0x16, 0x24, 0x34, 0xe1, 0x25, 0xf1, 0x17, 0x18, 0x19, 0x1a, 0x26,
    0x27, 0x28, 0x29, 0x2a, 0x35, 0x36, 0x37, 0x38, 0x39, 0x3a, 0x43, 0x44, 0x45, 0x46, 0x47, 0x48,
    0x49, 0x4a, 0x53, 0x54, 0x55, 0x56, 0x57, 0x58, 0x59, 0x5a, 0x63, 0x64, 0x65, 0x66, 0x67, 0x68,
    0x69, 0x6a, 0x73, 0x74, 0x75, 0x76, 0x77, 0x78, 0x79, 0x7a, 0x82, 0x83, 0x84, 0x85, 0x86, 0x87,
    0x88, 0x89, 0x8a, 0x92, 0x93, 0x94, 0x95, 0x96, 0x97, 0x98, 0x99, 0x9a, 0xa2, 0xa3, 0xa4, 0xa5,
    0xa6, 0xa7, 0xa8, 0xa9, 0xaa, 0xb2, 0xb3, 0xb4, 0xb5, 0xb6, 0xb7, 0xb8, 0xb9, 0xba, 0xc2, 0xc3,
    0xc4, 0xc5, 0xc6, 0xc7, 0xc8, 0xc9, 0xca, 0xd2, 0xd3, 0xd4, 0xd5, 0xd6, 0xd7, 0xd8, 0xd9, 0xda,
    0xe2, 0xe3, 0xe4, 0xe5, 0xe6, 0xe7, 0xe8, 0xe9, 0xea, 0xf2, 0xf3, 0xf4, 0xf5, 0xf6, 0xf7, 0xf8,
    0xf9, 0xfa,
];

/// One DHT segment holding the four standard tables: DC 0 and AC 0 (luma), DC 1 and AC 1
/// (chroma). 4 bytes of marker and length + 2 x (17 + 12) + 2 x (17 + 162) = 420 bytes.
pub const STANDARD_DHT: [u8; 420] = standard_dht();

const fn standard_dht() -> [u8; 420] {
    let mut out = [0u8; 420];
    out[0] = 0xFF;
    out[1] = DHT;
    out[2] = 0x01; // segment length 418 = 0x01A2, excluding the marker
    out[3] = 0xA2;
    let at = put_table(&mut out, 4, 0x00, &DC_LUMA_COUNTS, &DC_SYMBOLS);
    let at = put_table(&mut out, at, 0x10, &AC_LUMA_COUNTS, &AC_LUMA_SYMBOLS);
    let at = put_table(&mut out, at, 0x01, &DC_CHROMA_COUNTS, &DC_SYMBOLS);
    let at = put_table(&mut out, at, 0x11, &AC_CHROMA_COUNTS, &AC_CHROMA_SYMBOLS);
    assert!(at == out.len(), "standard DHT length mismatch");
    out
}

const fn put_table(
    out: &mut [u8; 420],
    mut at: usize,
    class_id: u8,
    counts: &[u8; 16],
    symbols: &[u8],
) -> usize {
    out[at] = class_id;
    at += 1;
    let mut i = 0;
    while i < counts.len() {
        out[at] = counts[i];
        at += 1;
        i += 1;
    }
    let mut i = 0;
    while i < symbols.len() {
        out[at] = symbols[i];
        at += 1;
        i += 1;
    }
    at
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small but structurally complete baseline JPEG (not decodable: the scan is made up, and
    /// `inspect` never decodes).
    fn build(width: u16, height: u16, with_dht: bool, scan: &[u8]) -> Vec<u8> {
        let mut v = vec![0xFF, SOI];
        v.extend_from_slice(&[0xFF, 0xE0, 0x00, 0x04, b'h', b'i']); // APP0
        v.extend_from_slice(&[0xFF, 0xDB, 0x00, 0x43, 0x00]); // DQT, table 0
        v.extend_from_slice(&[1u8; 64]);
        let [h0, h1] = height.to_be_bytes();
        let [w0, w1] = width.to_be_bytes();
        v.extend_from_slice(&[0xFF, 0xC0, 0x00, 0x11, 8, h0, h1, w0, w1, 3]);
        v.extend_from_slice(&[1, 0x22, 0, 2, 0x11, 0, 3, 0x11, 0]);
        if with_dht {
            v.extend_from_slice(&STANDARD_DHT);
        }
        v.extend_from_slice(&[
            0xFF, SOS, 0x00, 0x0C, 3, 1, 0x00, 2, 0x11, 3, 0x11, 0, 63, 0,
        ]);
        v.extend_from_slice(scan);
        v.extend_from_slice(&[0xFF, EOI]);
        v
    }

    fn real_jpeg() -> Vec<u8> {
        let (w, h) = (48, 32);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i * 7 % 251) as u8).collect();
        let image = turbojpeg::Image {
            pixels: &pixels[..],
            width: w,
            pitch: w * 3,
            height: h,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(image, 80, turbojpeg::Subsamp::Sub2x2)
            .unwrap()
            .to_vec()
    }

    #[test]
    fn reads_frame_header_and_scan() {
        let jpeg = build(640, 480, true, &[0x12, 0x34]);
        let info = inspect(&jpeg).unwrap();
        assert_eq!((info.width, info.height, info.components), (640, 480, 3));
        assert_eq!(
            (info.precision, info.progressive, info.scans),
            (8, false, 1)
        );
        assert!(info.has_dht);
        assert_eq!(info.len, jpeg.len());
        assert_eq!(info.trailing_padding, 0);
        assert_eq!(
            &jpeg[info.first_scan_at..info.first_scan_at + 2],
            &[0xFF, SOS]
        );
    }

    #[test]
    fn stuffing_restarts_and_fill_bytes_do_not_end_a_scan() {
        // FF 00 (stuffed), RST3, a run of fill bytes before RST4, then fill bytes before EOI.
        let scan = [
            0x01, 0xFF, 0x00, 0x02, 0xFF, 0xD3, 0x03, 0xFF, 0xFF, 0xFF, 0xD4, 0xFF, 0xFF,
        ];
        let jpeg = build(16, 16, true, &scan);
        let info = inspect(&jpeg).unwrap();
        assert_eq!(info.len, jpeg.len());
        assert_eq!(info.scans, 1);
    }

    #[test]
    fn a_marker_inside_scan_data_ends_the_scan() {
        // A second SOI inside the scan is a marker, and not one allowed there.
        let jpeg = build(16, 16, true, &[0x01, 0xFF, SOI, 0x02]);
        let err = inspect(&jpeg).unwrap_err();
        assert!(
            matches!(err, JpegError::MisplacedMarker { marker: SOI, .. }),
            "{err}"
        );
    }

    #[test]
    fn every_proper_prefix_of_a_real_jpeg_is_rejected() {
        let jpeg = real_jpeg();
        assert!(inspect(&jpeg).is_ok());
        for cut in 0..jpeg.len() {
            assert!(
                inspect(&jpeg[..cut]).is_err(),
                "a JPEG cut to {cut} of {} bytes was accepted",
                jpeg.len()
            );
        }
    }

    #[test]
    fn truncated_segment_names_what_and_where() {
        let mut jpeg = build(16, 16, true, &[1]);
        jpeg.truncate(30); // inside the DQT segment, which starts at byte 8
        let err = inspect(&jpeg).unwrap_err();
        assert_eq!(
            err,
            JpegError::Truncated {
                what: "quantisation table (DQT) segment",
                at: 8,
                len: 30
            }
        );
        assert!(err.to_string().contains("truncated JPEG"), "{err}");
    }

    #[test]
    fn scan_without_eoi_is_truncated() {
        let mut jpeg = build(16, 16, true, &[1, 2, 3]);
        jpeg.truncate(jpeg.len() - 2);
        let err = inspect(&jpeg).unwrap_err();
        assert!(
            matches!(
                err,
                JpegError::Truncated {
                    what: "scan data (no EOI)",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn missing_frame_header_or_scan_is_an_error() {
        let no_sos = [
            0xFF, SOI, 0xFF, 0xC0, 0, 11, 8, 0, 1, 0, 1, 1, 1, 0x11, 0, 0xFF, EOI,
        ];
        assert_eq!(
            inspect(&no_sos),
            Err(JpegError::Missing("scan (SOS) before EOI"))
        );
        let no_sof = [
            0xFF, SOI, 0xFF, SOS, 0, 8, 1, 1, 0, 0, 63, 0, 0x55, 0xFF, EOI,
        ];
        assert_eq!(
            inspect(&no_sof),
            Err(JpegError::Missing(
                "frame header (SOF) before the first scan"
            ))
        );
    }

    #[test]
    fn zero_dimensions_are_rejected() {
        let jpeg = build(0, 480, true, &[1]);
        assert_eq!(
            inspect(&jpeg),
            Err(JpegError::ZeroSize {
                width: 0,
                height: 480
            })
        );
    }

    #[test]
    fn garbage_and_empty_input_are_not_jpeg() {
        let err = inspect(b"GIF89a...").unwrap_err();
        assert_eq!(
            err.to_string(),
            "not a JPEG: data starts with 47 49 46 38 instead of SOI (FF D8)"
        );
        assert!(matches!(inspect(&[]), Err(JpegError::NotJpeg { .. })));
        assert!(inspect(&[0xFF, SOI]).is_err());
    }

    #[test]
    fn zero_padding_after_eoi_is_reported_but_other_trailing_data_is_not_allowed() {
        let mut jpeg = build(16, 16, true, &[1]);
        let len = jpeg.len();
        jpeg.extend_from_slice(&[0; 100]);
        let info = inspect(&jpeg).unwrap();
        assert_eq!((info.len, info.trailing_padding), (len, 100));
        jpeg[len + 50] = 7;
        assert_eq!(
            inspect(&jpeg),
            Err(JpegError::TrailingData {
                at: len + 50,
                eoi_end: len
            })
        );
    }

    #[test]
    fn non_zero_padding_is_found_wherever_it_sits_in_a_long_pad() {
        let pad = vec![0u8; 3 * 256 + 17];
        assert_eq!(first_non_zero(&pad), None);
        assert_eq!(first_non_zero(&[]), None);
        for at in [0, 1, 255, 256, 257, 511, 700, pad.len() - 1] {
            let mut p = pad.clone();
            p[at] = 0x80;
            p[pad.len() - 1] |= 1; // a later non-zero byte must not be the one reported
            assert_eq!(first_non_zero(&p), Some(at), "non-zero byte at {at}");
        }
    }

    #[test]
    fn arithmetic_and_lossless_frames_are_unsupported() {
        let mut jpeg = build(16, 16, true, &[1]);
        let sof = jpeg.windows(2).position(|w| w == [0xFF, 0xC0]).unwrap();
        for code in [0xC3, 0xC9] {
            jpeg[sof + 1] = code;
            assert_eq!(
                inspect(&jpeg),
                Err(JpegError::UnsupportedFrame { marker: code })
            );
        }
    }

    #[test]
    fn malformed_huffman_table_is_rejected() {
        let mut jpeg = build(16, 16, false, &[1]);
        let sos = jpeg.windows(2).position(|w| w == [0xFF, SOS]).unwrap();
        // A DHT claiming 17 symbols of length 1 but carrying none.
        let mut dht = vec![0xFF, DHT, 0x00, 0x13, 0x00, 17];
        dht.extend_from_slice(&[0; 15]);
        jpeg.splice(sos..sos, dht);
        let err = inspect(&jpeg).unwrap_err();
        assert!(
            matches!(
                err,
                JpegError::BadSegment {
                    marker: DHT,
                    reason: "table is cut short",
                    ..
                }
            ),
            "{err}"
        );
    }

    #[test]
    fn valid_jpeg_comes_back_as_the_same_buffer() {
        let input = Bytes::from(build(32, 16, true, &[1, 2, 3]));
        let out = repair(input.clone()).unwrap();
        assert_eq!(out, input);
        assert_eq!(out.as_ptr(), input.as_ptr(), "no copy for a valid JPEG");
    }

    #[test]
    fn padding_is_trimmed_without_copying() {
        let jpeg = build(32, 16, true, &[1, 2, 3]);
        let mut padded = jpeg.clone();
        padded.extend_from_slice(&[0; 37]);
        let input = Bytes::from(padded);
        let out = repair(input.clone()).unwrap();
        assert_eq!(out, jpeg);
        assert_eq!(
            out.as_ptr(),
            input.as_ptr(),
            "trimming is a slice, not a copy"
        );
    }

    #[test]
    fn missing_tables_are_inserted_before_the_first_scan() {
        let without = build(32, 16, false, &[1, 2, 3]);
        let with = build(32, 16, true, &[1, 2, 3]);
        let info = inspect(&without).unwrap();
        assert!(!info.has_dht);
        let (out, out_info) = repair_with_info(Bytes::from(without)).unwrap();
        assert_eq!(out, with, "standard DHT spliced in right before SOS");
        assert_eq!(inspect(&out).unwrap(), out_info);
    }

    #[test]
    fn a_borrowed_buffer_is_repaired_like_an_owned_one() {
        let with = build(32, 16, true, &[1, 2, 3]);
        let pool = FramePool::new(1);
        for input in [with.clone(), build(32, 16, false, &[1, 2, 3])] {
            let mut padded = input.clone();
            padded.extend_from_slice(&[0; 37]);
            let (out, info) = repair_from_slice(&padded, &pool).unwrap();
            assert_eq!(
                out, with,
                "tables inserted where missing, padding left behind"
            );
            assert_eq!((out, info), repair_with_info(Bytes::from(padded)).unwrap());
        }
        assert!(repair_from_slice(&[0xFF, 0xD8, 0xFF], &pool).is_err());
    }

    #[test]
    fn tables_are_inserted_before_fill_bytes_that_precede_sos() {
        let mut jpeg = build(32, 16, false, &[1]);
        let sos = jpeg.windows(2).position(|w| w == [0xFF, SOS]).unwrap();
        jpeg.splice(sos..sos, [0xFF, 0xFF]);
        let info = inspect(&jpeg).unwrap();
        assert_eq!(info.first_scan_at, sos);
        let out = repair(Bytes::from(jpeg)).unwrap();
        assert_eq!(&out[sos..sos + 2], &[0xFF, DHT]);
        assert!(inspect(&out).unwrap().has_dht);
    }

    #[test]
    fn tables_only_after_the_first_scan_do_not_count() {
        let mut jpeg = build(32, 16, false, &[1]);
        let eoi = jpeg.len() - 2;
        jpeg.splice(eoi..eoi, STANDARD_DHT);
        assert!(!inspect(&jpeg).unwrap().has_dht);
    }

    #[test]
    fn repair_refuses_what_the_standard_tables_cannot_cover() {
        let mut twelve_bit = build(32, 16, false, &[1]);
        let sof = twelve_bit
            .windows(2)
            .position(|w| w == [0xFF, 0xC0])
            .unwrap();
        twelve_bit[sof + 4] = 12;
        let err = repair(Bytes::from(twelve_bit)).unwrap_err();
        assert!(matches!(err, JpegError::CannotRepair(_)), "{err}");

        let mut table_two = build(32, 16, false, &[1]);
        let sos = table_two.windows(2).position(|w| w == [0xFF, SOS]).unwrap();
        table_two[sos + 6] = 0x22; // component 1 uses DC table 2, AC table 2
        assert_eq!(inspect(&table_two).unwrap().max_table_selector, 2);
        assert!(matches!(
            repair(Bytes::from(table_two)),
            Err(JpegError::CannotRepair(_))
        ));
    }

    #[test]
    fn standard_tables_match_what_libjpeg_turbo_writes() {
        // libjpeg-turbo encodes with the Annex K tables unless told to optimise, so the tables in
        // its output must equal ours, table for table.
        let jpeg = real_jpeg();
        let mut theirs = huffman_tables(&jpeg);
        let mut ours = huffman_tables(&build(8, 8, true, &[1]));
        theirs.sort();
        ours.sort();
        assert_eq!(theirs.len(), 4);
        assert_eq!(theirs, ours);
    }

    /// Every (class/id, counts + symbols) table in the DHT segments before the first scan.
    fn huffman_tables(jpeg: &[u8]) -> Vec<(u8, Vec<u8>)> {
        let mut tables = Vec::new();
        let mut pos = 2;
        while jpeg[pos + 1] != SOS {
            let len = usize::from(u16::from_be_bytes([jpeg[pos + 2], jpeg[pos + 3]]));
            if jpeg[pos + 1] == DHT {
                let mut body = &jpeg[pos + 4..pos + 2 + len];
                while !body.is_empty() {
                    let n: usize = body[1..17].iter().map(|&c| usize::from(c)).sum();
                    tables.push((body[0], body[1..17 + n].to_vec()));
                    body = &body[17 + n..];
                }
            }
            pos += 2 + len;
        }
        tables
    }

    #[test]
    fn progressive_jpeg_with_several_scans_is_understood() {
        let (w, h) = (40, 24);
        let pixels: Vec<u8> = (0..w * h * 3).map(|i| (i % 256) as u8).collect();
        let mut c = turbojpeg::Compressor::new().unwrap();
        c.set_progressive(true).unwrap();
        let jpeg = c
            .compress_to_vec(turbojpeg::Image {
                pixels: &pixels[..],
                width: w,
                pitch: w * 3,
                height: h,
                format: turbojpeg::PixelFormat::RGB,
            })
            .unwrap();
        let info = inspect(&jpeg).unwrap();
        assert!(info.progressive);
        assert!(info.scans > 1, "{} scans", info.scans);
        assert_eq!((info.width, info.height), (40, 24));
    }

    #[test]
    fn mutated_real_jpegs_never_panic_and_repairs_always_reinspect() {
        // A deterministic stand-in for the cargo-fuzz target that runs on stable in `cargo test`.
        let original = real_jpeg();
        let mut state = 0x2545_F491_4F6C_DD1Du64;
        let mut next = move || {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            state
        };
        let mut accepted = 0;
        for _ in 0..3000 {
            let mut data = original.clone();
            for _ in 0..1 + next() % 4 {
                let at = (next() as usize) % data.len();
                match next() % 3 {
                    0 => data[at] = next() as u8,
                    1 => data.truncate(at.max(1)),
                    _ => data.insert(at, 0xFF),
                }
            }
            if let Ok(out) = repair(Bytes::from(data)) {
                accepted += 1;
                assert!(inspect(&out).unwrap().has_dht);
            }
        }
        assert!(accepted > 0, "some mutations (in scan data) stay valid");
    }

    #[test]
    fn standard_dht_is_self_consistent() {
        for counts_and_symbols in [
            (&DC_LUMA_COUNTS, DC_SYMBOLS.len()),
            (&DC_CHROMA_COUNTS, DC_SYMBOLS.len()),
            (&AC_LUMA_COUNTS, AC_LUMA_SYMBOLS.len()),
            (&AC_CHROMA_COUNTS, AC_CHROMA_SYMBOLS.len()),
        ] {
            let total: usize = counts_and_symbols.0.iter().map(|&c| usize::from(c)).sum();
            assert_eq!(total, counts_and_symbols.1);
        }
        let marker = Marker {
            start: 0,
            code: DHT,
            end: 2,
        };
        assert_eq!(check_huffman_tables(&marker, &STANDARD_DHT[4..]), Ok(()));
    }
}
