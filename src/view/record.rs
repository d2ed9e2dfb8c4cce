//! Recording: the JPEGs exactly as received, in a Matroska file (codec `V_MJPEG`).
//!
//! Why Matroska: VLC, ffmpeg/ffprobe, mpv and browsers' media stacks open it; it carries real
//! per-frame timestamps (an MJPEG stream at a varying rate keeps its timing); and it can be
//! written so that a file cut short at any point still plays. For that last property:
//! - the Segment and each Cluster start with the EBML "unknown size", which readers treat as
//!   "until the next element that cannot be a child", so a file that ends mid-cluster is valid;
//! - each frame is flushed to the OS as soon as it is written, so a killed process loses at
//!   most the frame in flight;
//! - closing a cluster, and [`MkvRecorder::finish`], patch the real sizes and the duration in
//!   place; `finish` also appends a seek index (Cues, one entry per one-second cluster) and
//!   fills the room kept at the start with a SeekHead pointing at it, so a cleanly finished
//!   file is fully sized, knows its length and seeks at once.
//!
//! No well-kept crate writes MJPEG into Matroska (the `mkv` crate is an unfinished 2015
//! experiment, the others are parts of whole media frameworks or disc rippers), so this is a
//! small EBML writer for exactly the elements needed.

use std::fs::File;
use std::io::{self, BufWriter, Seek, SeekFrom, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use crate::client::Received;

/// EBML and Matroska element IDs (with their length markers, as written).
pub mod id {
    pub const EBML: u32 = 0x1A45_DFA3;
    pub const EBML_VERSION: u32 = 0x4286;
    pub const EBML_READ_VERSION: u32 = 0x42F7;
    pub const EBML_MAX_ID_LENGTH: u32 = 0x42F2;
    pub const EBML_MAX_SIZE_LENGTH: u32 = 0x42F3;
    pub const DOC_TYPE: u32 = 0x4282;
    pub const DOC_TYPE_VERSION: u32 = 0x4287;
    pub const DOC_TYPE_READ_VERSION: u32 = 0x4285;
    pub const SEGMENT: u32 = 0x1853_8067;
    pub const INFO: u32 = 0x1549_A966;
    pub const TIMESTAMP_SCALE: u32 = 0x2A_D7B1;
    pub const DURATION: u32 = 0x4489;
    pub const DATE_UTC: u32 = 0x4461;
    pub const TITLE: u32 = 0x7BA9;
    pub const MUXING_APP: u32 = 0x4D80;
    pub const WRITING_APP: u32 = 0x5741;
    pub const TRACKS: u32 = 0x1654_AE6B;
    pub const TRACK_ENTRY: u32 = 0xAE;
    pub const TRACK_NUMBER: u32 = 0xD7;
    pub const TRACK_UID: u32 = 0x73C5;
    pub const TRACK_TYPE: u32 = 0x83;
    pub const FLAG_LACING: u32 = 0x9C;
    pub const CODEC_ID: u32 = 0x86;
    pub const VIDEO: u32 = 0xE0;
    pub const PIXEL_WIDTH: u32 = 0xB0;
    pub const PIXEL_HEIGHT: u32 = 0xBA;
    pub const CLUSTER: u32 = 0x1F43_B675;
    pub const TIMESTAMP: u32 = 0xE7;
    pub const SIMPLE_BLOCK: u32 = 0xA3;
    pub const SEEK_HEAD: u32 = 0x114D_9B74;
    pub const SEEK: u32 = 0x4DBB;
    pub const SEEK_ID: u32 = 0x53AB;
    pub const SEEK_POSITION: u32 = 0x53AC;
    pub const VOID: u32 = 0xEC;
    pub const CUES: u32 = 0x1C53_BB6B;
    pub const CUE_POINT: u32 = 0xBB;
    pub const CUE_TIME: u32 = 0xB3;
    pub const CUE_TRACK_POSITIONS: u32 = 0xB7;
    pub const CUE_TRACK: u32 = 0xF7;
    pub const CUE_CLUSTER_POSITION: u32 = 0xF1;
}

/// The 8-byte "size unknown" marker (all value bits set).
pub const UNKNOWN_SIZE: [u8; 8] = [0x01, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF, 0xFF];

/// Timestamps are in milliseconds (TimestampScale = 1 ms in nanoseconds).
const TIMESTAMP_SCALE_NS: u64 = 1_000_000;
/// A new cluster starts after this long, so a reader can resynchronise (and seek) often.
const CLUSTER_SPAN_MS: u64 = 1_000;
/// Bytes kept (as a Void element) at the segment's start for the SeekHead that `finish`
/// writes: three Seek entries need at most 68.
const SEEK_HEAD_ROOM: usize = 96;
/// Matroska's epoch for DateUTC, 2001-01-01T00:00:00Z, in Unix seconds.
const MATROSKA_EPOCH_UNIX_S: i64 = 978_307_200;

/// Writes MJPEG frames into a Matroska file as they arrive.
pub struct MkvRecorder<W: Write + Seek> {
    out: W,
    title: String,
    /// Set once the headers are written (at the first frame, which gives the picture size).
    layout: Option<Layout>,
    cluster: Option<Cluster>,
    last_ms: u64,
    frames: u64,
    /// Reused buffer for one SimpleBlock.
    scratch: Vec<u8>,
    /// (start ms, position in the segment) of every cluster, for the Cues (the seek index).
    cues: Vec<(u64, u64)>,
}

/// Where the fields patched later live.
struct Layout {
    /// Wall-clock time of timestamp 0: the first frame's capture time.
    origin: SystemTime,
    segment_size_at: u64,
    segment_data_at: u64,
    duration_at: u64,
    /// Info's and Tracks' positions in the segment, for the SeekHead.
    info_pos: u64,
    tracks_pos: u64,
}

struct Cluster {
    size_at: u64,
    start_ms: u64,
}

impl MkvRecorder<BufWriter<File>> {
    /// Creates (or truncates) `path`. Nothing but the file is written before the first frame.
    pub fn create(path: &Path, title: &str) -> io::Result<Self> {
        Ok(MkvRecorder::new(BufWriter::new(File::create(path)?), title))
    }
}

impl<W: Write + Seek> MkvRecorder<W> {
    /// `title` becomes the file's Title (players show it).
    pub fn new(out: W, title: &str) -> Self {
        MkvRecorder {
            out,
            title: title.to_string(),
            layout: None,
            cluster: None,
            last_ms: 0,
            frames: 0,
            scratch: Vec::new(),
            cues: Vec::new(),
        }
    }

    /// Frames written so far.
    pub fn frames(&self) -> u64 {
        self.frames
    }

    /// Appends one JPEG, captured at `captured_at`, and hands it to the OS. Timestamps that go
    /// backwards (a server restarted with another clock) are held at the previous one, since
    /// Matroska blocks must not go back in time.
    pub fn write_frame(&mut self, jpeg: &[u8], captured_at: SystemTime) -> io::Result<()> {
        if self.layout.is_none() {
            self.write_headers(jpeg, captured_at)?;
        }
        let origin = self.layout.as_ref().map_or(captured_at, |l| l.origin);
        let ms = captured_at
            .duration_since(origin)
            .map_or(0, |d| d.as_millis() as u64)
            .max(self.last_ms);
        let needs_cluster = self
            .cluster
            .as_ref()
            .is_none_or(|c| ms - c.start_ms >= CLUSTER_SPAN_MS);
        if needs_cluster {
            self.close_cluster()?;
            self.open_cluster(ms)?;
        }
        let start_ms = self.cluster.as_ref().map_or(ms, |c| c.start_ms);
        // SimpleBlock: track number (vint), i16 time relative to the cluster, flags (keyframe).
        let relative = i16::try_from(ms - start_ms).expect("cluster span is far below i16::MAX ms");
        // The block goes out in one write, so a killed process leaves whole blocks only.
        let block = &mut self.scratch;
        block.clear();
        block.extend_from_slice(&id_bytes(id::SIMPLE_BLOCK));
        block.extend_from_slice(&size_vint(4 + jpeg.len() as u64));
        block.push(0x81);
        block.extend_from_slice(&relative.to_be_bytes());
        block.push(0x80);
        block.extend_from_slice(jpeg);
        self.out.write_all(block)?;
        self.out.flush()?;
        self.last_ms = ms;
        self.frames += 1;
        Ok(())
    }

    /// Patches the last cluster's size, writes the Cues (seek index) and the SeekHead that
    /// points at them, patches the duration and the segment size, and flushes. Returns the
    /// number of frames written. A recorder dropped without this still leaves a playable file.
    pub fn finish(mut self) -> io::Result<u64> {
        self.close_cluster()?;
        if let Some(layout) = &self.layout {
            let cues_pos = self.out.stream_position()? - layout.segment_data_at;
            self.out.write_all(&cues(&self.cues))?;
            let end = self.out.stream_position()?;
            let seek_head = seek_head(&[
                (id::INFO, layout.info_pos),
                (id::TRACKS, layout.tracks_pos),
                (id::CUES, cues_pos),
            ]);
            self.out.seek(SeekFrom::Start(layout.segment_data_at))?;
            self.out.write_all(&seek_head)?;
            self.out
                .write_all(&void(SEEK_HEAD_ROOM - seek_head.len()))?;
            let duration_ms = self.last_ms + self.mean_frame_interval_ms();
            self.out.seek(SeekFrom::Start(layout.duration_at))?;
            self.out.write_all(&(duration_ms as f64).to_be_bytes())?;
            self.out.seek(SeekFrom::Start(layout.segment_size_at))?;
            self.out
                .write_all(&fixed_size(end - layout.segment_data_at))?;
            self.out.seek(SeekFrom::Start(end))?;
        }
        self.out.flush()?;
        Ok(self.frames)
    }

    /// The last frame's on-screen time: the mean interval (0 for a single frame).
    fn mean_frame_interval_ms(&self) -> u64 {
        match self.frames {
            0 | 1 => 0,
            n => self.last_ms / (n - 1),
        }
    }

    fn write_headers(&mut self, jpeg: &[u8], origin: SystemTime) -> io::Result<()> {
        let header = turbojpeg::read_header(jpeg).map_err(|e| {
            io::Error::new(
                io::ErrorKind::InvalidData,
                format!("first frame is not a JPEG: {e}"),
            )
        })?;
        let ebml = master(
            id::EBML,
            &[
                uint(id::EBML_VERSION, 1),
                uint(id::EBML_READ_VERSION, 1),
                uint(id::EBML_MAX_ID_LENGTH, 4),
                uint(id::EBML_MAX_SIZE_LENGTH, 8),
                string(id::DOC_TYPE, "matroska"),
                uint(id::DOC_TYPE_VERSION, 4),
                uint(id::DOC_TYPE_READ_VERSION, 2),
            ],
        );
        self.out.write_all(&ebml)?;
        write_id(&mut self.out, id::SEGMENT)?;
        let segment_size_at = self.out.stream_position()?;
        self.out.write_all(&UNKNOWN_SIZE)?;
        let segment_data_at = self.out.stream_position()?;
        self.out.write_all(&void(SEEK_HEAD_ROOM))?;
        let info_pos = SEEK_HEAD_ROOM as u64;

        let app = concat!("camcast-view ", env!("CARGO_PKG_VERSION"));
        let duration = element(id::DURATION, &0f64.to_be_bytes());
        let info = master(
            id::INFO,
            &[
                uint(id::TIMESTAMP_SCALE, TIMESTAMP_SCALE_NS),
                element(id::DATE_UTC, &matroska_date(origin).to_be_bytes()),
                string(id::TITLE, &self.title),
                string(id::MUXING_APP, app),
                string(id::WRITING_APP, app),
                duration.clone(),
            ],
        );
        // Duration is Info's last child: its 8-byte float payload ends the Info element.
        let duration_at = segment_data_at + info_pos + (info.len() - 8) as u64;
        let tracks_pos = info_pos + info.len() as u64;
        self.out.write_all(&info)?;

        let video = master(
            id::VIDEO,
            &[
                uint(id::PIXEL_WIDTH, header.width as u64),
                uint(id::PIXEL_HEIGHT, header.height as u64),
            ],
        );
        let track = master(
            id::TRACK_ENTRY,
            &[
                uint(id::TRACK_NUMBER, 1),
                uint(id::TRACK_UID, 1),
                uint(id::TRACK_TYPE, 1), // video
                uint(id::FLAG_LACING, 0),
                string(id::CODEC_ID, "V_MJPEG"),
                video,
            ],
        );
        self.out.write_all(&master(id::TRACKS, &[track]))?;
        self.layout = Some(Layout {
            origin,
            segment_size_at,
            segment_data_at,
            duration_at,
            info_pos,
            tracks_pos,
        });
        Ok(())
    }

    fn open_cluster(&mut self, start_ms: u64) -> io::Result<()> {
        let segment_data_at = self.layout.as_ref().map_or(0, |l| l.segment_data_at);
        let pos = self.out.stream_position()? - segment_data_at;
        self.cues.push((start_ms, pos));
        write_id(&mut self.out, id::CLUSTER)?;
        let size_at = self.out.stream_position()?;
        self.out.write_all(&UNKNOWN_SIZE)?;
        self.out.write_all(&uint(id::TIMESTAMP, start_ms))?;
        self.cluster = Some(Cluster { size_at, start_ms });
        Ok(())
    }

    /// Replaces the open cluster's unknown size with its real one.
    fn close_cluster(&mut self) -> io::Result<()> {
        let Some(c) = self.cluster.take() else {
            return Ok(());
        };
        let end = self.out.stream_position()?;
        self.out.seek(SeekFrom::Start(c.size_at))?;
        self.out.write_all(&fixed_size(end - c.size_at - 8))?;
        self.out.seek(SeekFrom::Start(end))?;
        Ok(())
    }
}

/// A recording to a file: the recorder plus the path it reports at the end.
pub struct Recording {
    path: PathBuf,
    rec: MkvRecorder<BufWriter<File>>,
}

impl Recording {
    pub fn start(path: &Path, title: &str) -> io::Result<Self> {
        Ok(Recording {
            path: path.to_path_buf(),
            rec: MkvRecorder::create(path, title)?,
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends a received frame, at its capture time (its arrival time on the tutorial API,
    /// which carries none).
    pub fn add(&mut self, frame: &Received) -> io::Result<()> {
        let at = frame.captured_at.unwrap_or_else(SystemTime::now);
        self.rec.write_frame(&frame.jpeg, at)
    }

    /// Finalizes the file and returns (frames written, path).
    pub fn finish(self) -> io::Result<(u64, PathBuf)> {
        Ok((self.rec.finish()?, self.path))
    }
}

/// The seek index: one CuePoint per cluster (every frame is a key frame).
fn cues(clusters: &[(u64, u64)]) -> Vec<u8> {
    let points: Vec<Vec<u8>> = clusters
        .iter()
        .map(|&(ms, pos)| {
            let at = master(
                id::CUE_TRACK_POSITIONS,
                &[uint(id::CUE_TRACK, 1), uint(id::CUE_CLUSTER_POSITION, pos)],
            );
            master(id::CUE_POINT, &[uint(id::CUE_TIME, ms), at])
        })
        .collect();
    master(id::CUES, &points)
}

/// Where the top-level elements are, as (ID, position in the segment).
fn seek_head(entries: &[(u32, u64)]) -> Vec<u8> {
    let seeks: Vec<Vec<u8>> = entries
        .iter()
        .map(|&(target, pos)| {
            master(
                id::SEEK,
                &[
                    element(id::SEEK_ID, &id_bytes(target)),
                    uint(id::SEEK_POSITION, pos),
                ],
            )
        })
        .collect();
    master(id::SEEK_HEAD, &seeks)
}

/// A Void element `total` bytes long (2..=128), filler that readers skip.
fn void(total: usize) -> Vec<u8> {
    assert!((2..=128).contains(&total), "void of {total} bytes");
    element(id::VOID, &vec![0; total - 2])
}

/// Nanoseconds since 2001-01-01T00:00:00Z.
fn matroska_date(t: SystemTime) -> i64 {
    let unix_ns = match t.duration_since(UNIX_EPOCH) {
        Ok(d) => d.as_nanos() as i64,
        Err(e) => -(e.duration().as_nanos() as i64),
    };
    unix_ns - MATROSKA_EPOCH_UNIX_S * 1_000_000_000
}

/// Converts a Matroska DateUTC back to wall time (for tests and tools).
pub fn from_matroska_date(ns: i64) -> SystemTime {
    let unix_ns = ns + MATROSKA_EPOCH_UNIX_S * 1_000_000_000;
    UNIX_EPOCH + Duration::from_nanos(unix_ns.max(0) as u64)
}

fn write_id(out: &mut impl Write, id: u32) -> io::Result<()> {
    out.write_all(&id_bytes(id))
}

/// An element ID as written: its big-endian bytes without leading zeros (the marker bit is
/// part of the ID).
fn id_bytes(id: u32) -> Vec<u8> {
    let bytes = id.to_be_bytes();
    let skip = (id.leading_zeros() / 8).min(3) as usize;
    bytes[skip..].to_vec()
}

/// The shortest EBML variable-size integer for `n` (the all-ones value of each length is
/// reserved for "unknown", so it is avoided).
pub fn size_vint(n: u64) -> Vec<u8> {
    let len = (1..=8u32)
        .find(|&len| n < (1u64 << (7 * len)) - 1)
        .expect("element sizes fit in 56 bits");
    let marked = n | (1u64 << (7 * len));
    marked.to_be_bytes()[(8 - len as usize)..].to_vec()
}

/// An 8-byte size, the same width as [`UNKNOWN_SIZE`], so it can replace it in place.
fn fixed_size(n: u64) -> [u8; 8] {
    assert!(n < (1 << 56) - 1, "element too large for EBML");
    (n | (1 << 56)).to_be_bytes()
}

fn element(id: u32, payload: &[u8]) -> Vec<u8> {
    let mut v = id_bytes(id);
    v.extend_from_slice(&size_vint(payload.len() as u64));
    v.extend_from_slice(payload);
    v
}

fn master(id: u32, children: &[Vec<u8>]) -> Vec<u8> {
    element(id, &children.concat())
}

fn uint(id: u32, value: u64) -> Vec<u8> {
    let bytes = value.to_be_bytes();
    let skip = ((value.leading_zeros() / 8) as usize).min(7);
    element(id, &bytes[skip..])
}

fn string(id: u32, s: &str) -> Vec<u8> {
    element(id, s.as_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Cursor;

    /// One parsed element: ID, payload range, and its children when it is a master.
    #[derive(Debug)]
    struct El {
        id: u32,
        data: std::ops::Range<usize>,
        children: Vec<El>,
    }

    const MASTERS: &[u32] = &[
        id::EBML,
        id::SEGMENT,
        id::INFO,
        id::TRACKS,
        id::TRACK_ENTRY,
        id::VIDEO,
        id::CLUSTER,
        id::SEEK_HEAD,
        id::SEEK,
        id::CUES,
        id::CUE_POINT,
        id::CUE_TRACK_POSITIONS,
    ];

    /// Reads a variable-size integer; returns (value with marker removed, length, all ones).
    fn read_vint(b: &[u8], keep_marker: bool) -> (u64, usize, bool) {
        let len = b[0].leading_zeros() as usize + 1;
        assert!(len <= 8, "bad vint at {:02x}", b[0]);
        let mut v = 0u64;
        for &x in &b[..len] {
            v = (v << 8) | u64::from(x);
        }
        let value_bits = 7 * len as u32;
        let unknown = v & ((1u64 << value_bits) - 1) == (1u64 << value_bits) - 1;
        if !keep_marker {
            v &= (1u64 << value_bits) - 1;
        }
        (v, len, unknown)
    }

    /// Walks EBML from `pos` to `end`. An unknown-size master runs until an element that is
    /// not its child (here: a Cluster cannot contain a Cluster) or the end of its parent.
    fn walk(b: &[u8], mut pos: usize, end: usize, parent: Option<u32>) -> (Vec<El>, usize) {
        let mut out = Vec::new();
        while pos < end {
            let (id, id_len, _) = read_vint(&b[pos..], true);
            let id = id as u32;
            if parent == Some(id::CLUSTER) && id == id::CLUSTER {
                break; // sibling of an unknown-size cluster
            }
            let (size, size_len, unknown) = read_vint(&b[pos + id_len..], false);
            let start = pos + id_len + size_len;
            let (children, stop) = if MASTERS.contains(&id) {
                let limit = if unknown { end } else { start + size as usize };
                walk(b, start, limit, Some(id))
            } else {
                assert!(!unknown, "unknown size on a non-master {id:x}");
                (Vec::new(), start + size as usize)
            };
            assert!(stop <= end, "element {id:x} overruns its parent");
            out.push(El {
                id,
                data: start..stop,
                children,
            });
            pos = stop;
        }
        (out, pos)
    }

    fn child(e: &El, id: u32) -> &El {
        e.children
            .iter()
            .find(|c| c.id == id)
            .unwrap_or_else(|| panic!("{:x} has no child {id:x}", e.id))
    }

    fn read_uint(b: &[u8], e: &El) -> u64 {
        b[e.data.clone()]
            .iter()
            .fold(0, |v, &x| (v << 8) | u64::from(x))
    }

    fn jpeg(width: usize, height: usize, shade: u8) -> Vec<u8> {
        let pixels = vec![shade; width * height * 3];
        let img = turbojpeg::Image {
            pixels: pixels.as_slice(),
            width,
            pitch: width * 3,
            height,
            format: turbojpeg::PixelFormat::RGB,
        };
        turbojpeg::compress(img, 80, turbojpeg::Subsamp::Sub2x2)
            .unwrap()
            .to_vec()
    }

    /// (timestamp in ms, payload) of every SimpleBlock, in file order.
    fn blocks(b: &[u8], segment: &El) -> Vec<(u64, Vec<u8>)> {
        let mut out = Vec::new();
        for cluster in segment.children.iter().filter(|c| c.id == id::CLUSTER) {
            let base = read_uint(b, child(cluster, id::TIMESTAMP));
            for block in cluster.children.iter().filter(|c| c.id == id::SIMPLE_BLOCK) {
                let d = &b[block.data.clone()];
                assert_eq!(d[0], 0x81, "track 1");
                assert_eq!(d[3] & 0x80, 0x80, "keyframe flag");
                let rel = i16::from_be_bytes([d[1], d[2]]);
                out.push(((base as i64 + i64::from(rel)) as u64, d[4..].to_vec()));
            }
        }
        out
    }

    fn finished(frames: &[(Vec<u8>, u64)]) -> (Vec<u8>, SystemTime) {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let mut out = Cursor::new(Vec::new());
        let mut rec = MkvRecorder::new(&mut out, "cam test");
        for (j, ms) in frames {
            rec.write_frame(j, t0 + Duration::from_millis(*ms)).unwrap();
        }
        assert_eq!(rec.finish().unwrap(), frames.len() as u64);
        (out.into_inner(), t0)
    }

    #[test]
    fn vints_are_shortest_and_avoid_the_unknown_value() {
        assert_eq!(size_vint(0), [0x80]);
        assert_eq!(size_vint(126), [0xFE]);
        assert_eq!(size_vint(127), [0x40, 0x7F], "0xFF would mean unknown");
        assert_eq!(size_vint(300), [0x41, 0x2C]);
        for n in [0u64, 1, 126, 127, 5000, 1 << 20, (1 << 40) + 3] {
            let v = size_vint(n);
            let (back, len, unknown) = read_vint(&v, false);
            assert_eq!((back, len, unknown), (n, v.len(), false));
        }
        let (_, len, unknown) = read_vint(&UNKNOWN_SIZE, false);
        assert_eq!((len, unknown), (8, true));
        assert_eq!(read_vint(&fixed_size(1234), false), (1234, 8, false));
    }

    #[test]
    fn finished_file_parses_back_with_frames_timestamps_and_track() {
        let frames: Vec<(Vec<u8>, u64)> = (0..50u64)
            .map(|i| (jpeg(64, 48, (i * 5) as u8), i * 40))
            .collect();
        let (b, t0) = finished(&frames);
        let (top, end) = walk(&b, 0, b.len(), None);
        assert_eq!(end, b.len());
        assert_eq!(top.len(), 2, "EBML header and one Segment");
        assert_eq!(&b[child(&top[0], id::DOC_TYPE).data.clone()], b"matroska");
        let seg = &top[1];
        assert_eq!(seg.id, id::SEGMENT);
        assert_eq!(
            seg.data.end,
            b.len(),
            "segment size patched to the file's end"
        );

        let info = child(seg, id::INFO);
        assert_eq!(read_uint(&b, child(info, id::TIMESTAMP_SCALE)), 1_000_000);
        let dur = &b[child(info, id::DURATION).data.clone()];
        assert_eq!(f64::from_be_bytes(dur.try_into().unwrap()), 2000.0);
        let date = &b[child(info, id::DATE_UTC).data.clone()];
        assert_eq!(
            from_matroska_date(i64::from_be_bytes(date.try_into().unwrap())),
            t0
        );

        let track = child(child(seg, id::TRACKS), id::TRACK_ENTRY);
        assert_eq!(&b[child(track, id::CODEC_ID).data.clone()], b"V_MJPEG");
        let video = child(track, id::VIDEO);
        assert_eq!(read_uint(&b, child(video, id::PIXEL_WIDTH)), 64);
        assert_eq!(read_uint(&b, child(video, id::PIXEL_HEIGHT)), 48);

        let got = blocks(&b, seg);
        assert_eq!(got.len(), frames.len());
        for ((ts, data), (want, ms)) in got.iter().zip(&frames) {
            assert_eq!(
                (ts, data),
                (ms, want),
                "frame bytes and time kept as they were"
            );
        }
        let clusters: Vec<&El> = seg
            .children
            .iter()
            .filter(|c| c.id == id::CLUSTER)
            .collect();
        assert_eq!(clusters.len(), 2, "a new cluster each second of 2 s");

        // The SeekHead (first in the segment) points at Info, Tracks and Cues.
        let seg_start = seg.data.start;
        let id_at = |pos: u64| read_vint(&b[seg_start + pos as usize..], true).0 as u32;
        let seek_head = &seg.children[0];
        assert_eq!(seek_head.id, id::SEEK_HEAD);
        let mut targets = Vec::new();
        for seek in &seek_head.children {
            let target = read_uint(&b, child(seek, id::SEEK_ID)) as u32;
            let pos = read_uint(&b, child(seek, id::SEEK_POSITION));
            assert_eq!(id_at(pos), target, "seek entry for {target:x} points at it");
            targets.push(target);
        }
        assert_eq!(targets, [id::INFO, id::TRACKS, id::CUES]);
        // One cue per cluster, at its start time and position.
        let cue_points = &child(seg, id::CUES).children;
        assert_eq!(cue_points.len(), clusters.len());
        for (cue, cluster) in cue_points.iter().zip(&clusters) {
            let at = child(cue, id::CUE_TRACK_POSITIONS);
            let pos = read_uint(&b, child(at, id::CUE_CLUSTER_POSITION));
            assert_eq!(id_at(pos), id::CLUSTER);
            assert_eq!(
                read_uint(&b, child(cue, id::CUE_TIME)),
                read_uint(&b, child(cluster, id::TIMESTAMP))
            );
        }
    }

    #[test]
    fn file_cut_short_without_finish_still_parses() {
        let frames: Vec<(Vec<u8>, u64)> = (0..10u64).map(|i| (jpeg(32, 32, 9), i * 250)).collect();
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let mut out = Cursor::new(Vec::new());
        {
            let mut rec = MkvRecorder::new(&mut out, "cut");
            for (j, ms) in &frames {
                rec.write_frame(j, t0 + Duration::from_millis(*ms)).unwrap();
            }
            // Dropped without finish(), as when the process is killed.
        }
        let b = out.into_inner();
        let (top, _) = walk(&b, 0, b.len(), None);
        let seg = &top[1];
        let got = blocks(&b, seg);
        assert_eq!(got.len(), 10);
        assert_eq!(got.last().unwrap().0, 2250);
    }

    #[test]
    fn backwards_timestamps_are_held_and_bad_first_frame_is_refused() {
        let t0 = UNIX_EPOCH + Duration::from_secs(1_764_000_000);
        let mut out = Cursor::new(Vec::new());
        let mut rec = MkvRecorder::new(&mut out, "t");
        let err = rec.write_frame(b"not a jpeg", t0).unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::InvalidData);
        let j = jpeg(16, 16, 1);
        rec.write_frame(&j, t0).unwrap();
        rec.write_frame(&j, t0 + Duration::from_millis(500))
            .unwrap();
        rec.write_frame(&j, t0 + Duration::from_millis(100))
            .unwrap();
        rec.finish().unwrap();
        let b = out.into_inner();
        let (top, _) = walk(&b, 0, b.len(), None);
        let times: Vec<u64> = blocks(&b, &top[1]).iter().map(|x| x.0).collect();
        assert_eq!(times, [0, 500, 500]);
    }
}
