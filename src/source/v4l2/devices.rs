//! V4L2 enumeration: every video node, what it is, and for capture devices their formats, frame
//! sizes, rates and controls (the V4L2 part of `camcast devices`, see
//! [`crate::source::listing`]). Also picks the camera for `--source auto`.
//!
//! Nothing here fails as a whole: a machine without cameras gets an empty list, and a node that
//! cannot be read is reported with the reason.

use std::collections::HashMap;
use std::fmt;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::path::{Path, PathBuf};

use v4l::Device;

use super::controls::{self, ControlInfo, ControlKind};
use super::hw::{self, NodeKind};
use super::negotiate::{fourcc_text, fps_text, AdvertisedFormat, PixelFormat, Rates};

/// Where device nodes and their stable names live.
const DEV_DIR: &str = "/dev";
const BY_ID_DIR: &str = "/dev/v4l/by-id";

/// Drivers of the Raspberry Pi camera pipeline (CSI receiver, ISP, codecs). Their nodes look
/// like capture devices but give no picture unless libcamera configures sensor and ISP, so
/// `--source auto` must not pick them over a USB camera.
const PIPELINE_DRIVERS: &[&str] = &[
    "unicam",
    "bcm2835-unicam",
    "rp1-cfe",
    "bcm2835-isp",
    "pispbe",
    "bcm2835-codec",
    "rpi-hevc-dec",
];

/// One /dev/videoN node.
#[derive(Debug, Clone, PartialEq)]
pub struct DeviceReport {
    pub path: PathBuf,
    /// The /dev/v4l/by-id link to this node, which survives replugging and renumbering.
    pub stable_path: Option<PathBuf>,
    /// `None` when the node could not be opened or queried (see `problems`).
    pub kind: Option<NodeKind>,
    pub driver: String,
    pub card: String,
    pub bus: String,
    /// Capture devices only.
    pub formats: Vec<AdvertisedFormat>,
    /// Capture devices only.
    pub controls: Vec<ControlInfo>,
    /// What could not be read; the rest of the report stands.
    pub problems: Vec<String>,
}

impl DeviceReport {
    fn new(path: PathBuf, stable_path: Option<PathBuf>) -> Self {
        DeviceReport {
            path,
            stable_path,
            kind: None,
            driver: String::new(),
            card: String::new(),
            bus: String::new(),
            formats: Vec::new(),
            controls: Vec::new(),
            problems: Vec::new(),
        }
    }

    /// A camera to configure: a capture node, not the Pi's libcamera pipeline, offering a
    /// format camcast takes. (What `camcast devices --toml` lists.)
    pub fn is_camera(&self) -> bool {
        self.kind == Some(NodeKind::Capture)
            && !PIPELINE_DRIVERS.contains(&self.driver.as_str())
            && self
                .formats
                .iter()
                .any(|f| PixelFormat::from_fourcc(f.fourcc).is_some())
    }

    /// The name to configure: the stable link if there is one.
    pub fn preferred_path(&self) -> &Path {
        self.stable_path.as_deref().unwrap_or(&self.path)
    }
}

/// Every /dev/video* node, in numeric order. Empty when there are none.
pub fn list_devices() -> Vec<DeviceReport> {
    list_devices_in(Path::new(DEV_DIR), Path::new(BY_ID_DIR))
}

/// The camera `--source auto` should use: the first single-planar capture node offering MJPEG,
/// YUYV or NV12, skipping metadata nodes and the Pi's libcamera pipeline. Returns its stable
/// /dev/v4l/by-id name when there is one, so a replugged camera is found again.
pub fn first_capture_device() -> Option<PathBuf> {
    first_capture_device_in(Path::new(DEV_DIR), Path::new(BY_ID_DIR))
}

pub fn list_devices_in(dev_dir: &Path, by_id_dir: &Path) -> Vec<DeviceReport> {
    let stable = stable_names(by_id_dir);
    video_nodes(dev_dir)
        .into_iter()
        .map(|path| {
            let link = stable_name(&stable, &path);
            shielded_report(path, link)
        })
        .collect()
}

pub fn first_capture_device_in(dev_dir: &Path, by_id_dir: &Path) -> Option<PathBuf> {
    let stable = stable_names(by_id_dir);
    video_nodes(dev_dir)
        .into_iter()
        .find(|path| catch_unwind(|| is_usable_camera(path)).unwrap_or(false))
        .map(|path| stable_name(&stable, &path).unwrap_or(path))
}

fn is_usable_camera(path: &Path) -> bool {
    let Ok(dev) = Device::with_path(path) else {
        return false;
    };
    let Ok(caps) = hw::query_caps(&dev) else {
        return false;
    };
    NodeKind::of(caps.flags) == NodeKind::Capture
        && !PIPELINE_DRIVERS.contains(&caps.driver.as_str())
        && hw::advertised(&dev, (640, 480)).is_ok_and(|formats| {
            formats
                .iter()
                .any(|f| PixelFormat::from_fourcc(f.fourcc).is_some())
        })
}

/// `videoN` entries of `dir`, sorted by N (so video10 comes after video2).
fn video_nodes(dir: &Path) -> Vec<PathBuf> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut nodes: Vec<(u32, PathBuf)> = entries
        .filter_map(Result::ok)
        .filter_map(|e| {
            let name = e.file_name();
            let n = name.to_str()?.strip_prefix("video")?.parse().ok()?;
            Some((n, e.path()))
        })
        .collect();
    nodes.sort();
    nodes.into_iter().map(|(_, p)| p).collect()
}

/// Resolved target → by-id link. The first link in name order wins for a node with several.
fn stable_names(by_id_dir: &Path) -> HashMap<PathBuf, PathBuf> {
    let Ok(entries) = std::fs::read_dir(by_id_dir) else {
        return HashMap::new();
    };
    let mut links: Vec<PathBuf> = entries.filter_map(Result::ok).map(|e| e.path()).collect();
    links.sort();
    let mut map = HashMap::new();
    for link in links {
        if let Ok(target) = std::fs::canonicalize(&link) {
            map.entry(target).or_insert(link);
        }
    }
    map
}

fn stable_name(stable: &HashMap<PathBuf, PathBuf>, node: &Path) -> Option<PathBuf> {
    let canonical = std::fs::canonicalize(node).ok()?;
    stable.get(&canonical).cloned()
}

/// A driver answer the v4l crate cannot parse must cost one node's details, not the listing.
fn shielded_report(path: PathBuf, stable: Option<PathBuf>) -> DeviceReport {
    let fallback = DeviceReport::new(path.clone(), stable.clone());
    catch_unwind(AssertUnwindSafe(|| report(path, stable))).unwrap_or_else(|_| {
        let mut r = fallback;
        r.problems
            .push("the v4l crate panicked while reading this device".into());
        r
    })
}

fn report(path: PathBuf, stable: Option<PathBuf>) -> DeviceReport {
    let mut r = DeviceReport::new(path, stable);
    let dev = match Device::with_path(&r.path) {
        Ok(dev) => dev,
        Err(e) => {
            r.problems.push(format!("cannot open: {e}"));
            return r;
        }
    };
    let caps = match hw::query_caps(&dev) {
        Ok(caps) => caps,
        Err(e) => {
            r.problems
                .push(format!("not a V4L2 device (VIDIOC_QUERYCAP: {e})"));
            return r;
        }
    };
    let kind = NodeKind::of(caps.flags);
    (r.kind, r.driver, r.card, r.bus) = (Some(kind), caps.driver, caps.card, caps.bus);
    if kind == NodeKind::Capture {
        match hw::advertised_all(&dev) {
            Ok(formats) => r.formats = formats,
            Err(e) => r.problems.push(format!("cannot list formats: {e}")),
        }
        match controls::query(&dev) {
            Ok(list) => r.controls = list,
            Err(e) => r.problems.push(format!("cannot list controls: {e}")),
        }
    }
    r
}

/// The human listing `camcast devices` prints.
pub struct Listing<'a>(pub &'a [DeviceReport]);

impl fmt::Display for Listing<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        if self.0.is_empty() {
            return writeln!(f, "No V4L2 video devices found (no /dev/video* nodes).");
        }
        for (i, report) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            write!(f, "{report}")?;
        }
        Ok(())
    }
}

impl fmt::Display for DeviceReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match &self.stable_path {
            Some(link) => writeln!(f, "{} = {}", self.path.display(), link.display())?,
            None => writeln!(f, "{}", self.path.display())?,
        }
        if let Some(kind) = self.kind {
            writeln!(
                f,
                "  {} (driver {}, bus {})",
                self.card, self.driver, self.bus
            )?;
            if kind != NodeKind::Capture {
                writeln!(f, "  {}: skipped", kind.describe())?;
            }
        }
        for problem in &self.problems {
            writeln!(f, "  note: {problem}")?;
        }
        if self.kind == Some(NodeKind::Capture) {
            write_formats(f, &self.formats)?;
            write_controls(f, &self.controls)?;
        }
        Ok(())
    }
}

fn write_formats(f: &mut fmt::Formatter<'_>, formats: &[AdvertisedFormat]) -> fmt::Result {
    writeln!(f, "  formats:")?;
    if formats.is_empty() {
        writeln!(f, "    (none listed)")?;
    }
    for format in formats {
        let usable = if PixelFormat::from_fourcc(format.fourcc).is_some() {
            ""
        } else {
            "  [not used by camcast]"
        };
        writeln!(
            f,
            "    {:<4}  {}{usable}",
            fourcc_text(format.fourcc),
            format.description
        )?;
        if let Some(r) = format.range {
            writeln!(
                f,
                "      any size {}x{} to {}x{} in steps of {}x{}, e.g.:",
                r.min_width, r.min_height, r.max_width, r.max_height, r.step_width, r.step_height
            )?;
        }
        for size in &format.sizes {
            let size_text = format!("{}x{}", size.width, size.height);
            writeln!(f, "      {size_text:<10} {}", rates_text(&size.rates))?;
        }
    }
    Ok(())
}

fn rates_text(rates: &Rates) -> String {
    match rates {
        Rates::Discrete(list) => {
            let fps: Vec<String> = list.iter().map(|i| fps_text(i.fps())).collect();
            format!("{} fps", fps.join(", "))
        }
        Rates::Range { shortest, longest } => format!(
            "{} to {} fps",
            fps_text(longest.fps()),
            fps_text(shortest.fps())
        ),
        Rates::Unknown => "rates not listed by the driver".into(),
    }
}

fn write_controls(f: &mut fmt::Formatter<'_>, list: &[ControlInfo]) -> fmt::Result {
    writeln!(f, "  controls:")?;
    if list.is_empty() {
        writeln!(f, "    (none)")?;
    }
    for c in list {
        let value = |v: i64| value_text(c.kind, v);
        let current = c.current.map_or_else(|| "?".to_string(), value);
        write!(
            f,
            "    {:<28} {:<8} {}..{}  default {}  current {current}",
            c.name,
            c.kind.as_str(),
            value(c.min),
            value(c.max),
            value(c.default)
        )?;
        if c.read_only {
            write!(f, "  (read-only)")?;
        }
        if c.inactive {
            write!(f, "  (inactive)")?;
        }
        if !c.menu.is_empty() {
            let items: Vec<String> = c.menu.iter().map(|(v, l)| format!("{v}: {l}")).collect();
            write!(f, "  [{}]", items.join(", "))?;
        }
        writeln!(f)?;
    }
    Ok(())
}

/// Bitmask controls are 32-bit masks; as signed numbers they read as nonsense.
fn value_text(kind: ControlKind, v: i64) -> String {
    match kind {
        ControlKind::Bitmask => format!("{:#010x}", v as u32),
        _ => v.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::v4l2::negotiate::{AdvertisedSize, Interval};

    #[test]
    fn no_devices_is_an_empty_list_and_says_so() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("by-id");
        assert!(list_devices_in(dir.path(), &missing).is_empty());
        assert_eq!(first_capture_device_in(dir.path(), &missing), None);
        assert!(list_devices_in(&dir.path().join("nope"), &missing).is_empty());
        assert_eq!(
            Listing(&[]).to_string(),
            "No V4L2 video devices found (no /dev/video* nodes).\n"
        );
    }

    #[test]
    fn this_machine_lists_every_video_node_without_failing() {
        // Wherever it runs (no camera here, cameras elsewhere), each node gets one report.
        let reports = list_devices();
        assert_eq!(reports.len(), video_nodes(Path::new(DEV_DIR)).len());
        if !Path::new("/dev/video0").exists() && reports.is_empty() {
            assert_eq!(first_capture_device(), None);
        }
    }

    #[test]
    fn nodes_are_found_in_numeric_order_and_unreadable_ones_explained() {
        let dir = tempfile::tempdir().unwrap();
        for name in ["video10", "video2", "videoX", "video", "vbi0"] {
            std::fs::write(dir.path().join(name), b"not a device").unwrap();
        }
        let reports = list_devices_in(dir.path(), &dir.path().join("by-id"));
        let names: Vec<_> = reports
            .iter()
            .map(|r| r.path.file_name().unwrap())
            .collect();
        assert_eq!(names, ["video2", "video10"]);
        assert_eq!(reports[0].kind, None);
        assert!(
            reports[0].problems[0].contains("not a V4L2 device"),
            "{:?}",
            reports[0]
        );
        assert_eq!(
            first_capture_device_in(dir.path(), &dir.path().join("by-id")),
            None
        );
        let text = Listing(&reports).to_string();
        assert!(text.contains("video2\n  note: not a V4L2 device"), "{text}");
    }

    #[test]
    fn stable_by_id_names_are_reported() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("video0"), b"").unwrap();
        std::fs::write(dir.path().join("video1"), b"").unwrap();
        let by_id = dir.path().join("by-id");
        std::fs::create_dir(&by_id).unwrap();
        let link = by_id.join("usb-Acme_Cam-video-index0");
        std::os::unix::fs::symlink("../video0", &link).unwrap();
        let reports = list_devices_in(dir.path(), &by_id);
        assert_eq!(reports[0].stable_path.as_deref(), Some(link.as_path()));
        assert_eq!(reports[0].preferred_path(), link.as_path());
        assert_eq!(reports[1].stable_path, None);
        assert_eq!(reports[1].preferred_path(), dir.path().join("video1"));
    }

    fn webcam_report() -> DeviceReport {
        let mut r = DeviceReport::new(
            "/dev/video0".into(),
            Some("/dev/v4l/by-id/usb-Acme-video-index0".into()),
        );
        r.kind = Some(NodeKind::Capture);
        r.driver = "uvcvideo".into();
        r.card = "Acme Cam".into();
        r.bus = "usb-0000:01:00.0-1.3".into();
        r.formats = vec![AdvertisedFormat {
            fourcc: *b"MJPG",
            description: "Motion-JPEG".into(),
            sizes: vec![AdvertisedSize {
                width: 1280,
                height: 720,
                rates: Rates::Discrete(vec![
                    Interval { num: 1, den: 30 },
                    Interval { num: 2, den: 15 },
                ]),
            }],
            range: None,
        }];
        r.controls = vec![ControlInfo {
            id: 0x0098_0918,
            name: "Power Line Frequency".into(),
            kind: ControlKind::Menu,
            min: 0,
            max: 2,
            step: 1,
            default: 1,
            current: Some(2),
            menu: vec![
                (0, "Disabled".into()),
                (1, "50 Hz".into()),
                (2, "60 Hz".into()),
            ],
            read_only: false,
            inactive: false,
        }];
        r
    }

    #[test]
    fn capture_device_listing_shows_formats_rates_and_controls() {
        let text = webcam_report().to_string();
        let want = "\
/dev/video0 = /dev/v4l/by-id/usb-Acme-video-index0
  Acme Cam (driver uvcvideo, bus usb-0000:01:00.0-1.3)
  formats:
    MJPG  Motion-JPEG
      1280x720   30, 7.5 fps
  controls:
    Power Line Frequency         menu     0..2  default 1  current 2  [0: Disabled, 1: 50 Hz, 2: 60 Hz]
";
        assert_eq!(text, want);
    }

    #[test]
    fn metadata_nodes_are_listed_as_skipped() {
        let mut r = webcam_report();
        r.path = "/dev/video1".into();
        r.stable_path = None;
        r.kind = Some(NodeKind::Metadata);
        let text = r.to_string();
        assert!(text.contains("metadata node"), "{text}");
        assert!(text.contains("skipped"), "{text}");
        assert!(!text.contains("formats:"), "{text}");
    }

    #[test]
    fn rates_render_for_every_shape() {
        let range = Rates::Range {
            shortest: Interval { num: 1, den: 60 },
            longest: Interval { num: 1, den: 5 },
        };
        assert_eq!(rates_text(&range), "5 to 60 fps");
        assert_eq!(
            rates_text(&Rates::Unknown),
            "rates not listed by the driver"
        );
    }
}
