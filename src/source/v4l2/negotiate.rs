//! Choosing a capture mode from what a device advertises. Pure functions over plain data, so
//! every rule is tested without hardware; `hw` gathers the data and applies the choice.

use std::fmt;

/// Pixel formats camcast can serve.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PixelFormat {
    /// The camera's own JPEGs, passed through (after [`crate::jpeg::repair`]).
    Mjpeg,
    /// Packed 4:2:2, encoded here.
    Yuyv,
    /// Semi-planar 4:2:0, encoded here.
    Nv12,
}

impl PixelFormat {
    pub fn fourcc(self) -> [u8; 4] {
        match self {
            PixelFormat::Mjpeg => *b"MJPG",
            PixelFormat::Yuyv => *b"YUYV",
            PixelFormat::Nv12 => *b"NV12",
        }
    }

    pub fn from_fourcc(fourcc: [u8; 4]) -> Option<Self> {
        match &fourcc {
            b"MJPG" => Some(PixelFormat::Mjpeg),
            b"YUYV" => Some(PixelFormat::Yuyv),
            b"NV12" => Some(PixelFormat::Nv12),
            _ => None,
        }
    }
}

impl fmt::Display for PixelFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&fourcc_text(self.fourcc()))
    }
}

/// A fourcc as text, with unprintable bytes shown as '?'.
pub fn fourcc_text(fourcc: [u8; 4]) -> String {
    fourcc
        .iter()
        .map(|&b| {
            if b.is_ascii_graphic() {
                char::from(b)
            } else {
                '?'
            }
        })
        .collect::<String>()
        .trim_end_matches(['?', ' '])
        .to_string()
}

/// What the user asked for (`--format`, or `format = "..."` in the TOML file).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(try_from = "String")]
pub enum FormatChoice {
    /// MJPEG if the camera has it (no encoding here), else YUYV, else NV12.
    #[default]
    Auto,
    Mjpeg,
    Yuyv,
    Nv12,
}

impl FormatChoice {
    /// Formats to consider, most preferred first.
    pub fn candidates(self) -> &'static [PixelFormat] {
        match self {
            FormatChoice::Auto => &[PixelFormat::Mjpeg, PixelFormat::Yuyv, PixelFormat::Nv12],
            FormatChoice::Mjpeg => &[PixelFormat::Mjpeg],
            FormatChoice::Yuyv => &[PixelFormat::Yuyv],
            FormatChoice::Nv12 => &[PixelFormat::Nv12],
        }
    }
}

impl std::str::FromStr for FormatChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.to_ascii_lowercase().as_str() {
            "auto" => Ok(FormatChoice::Auto),
            "mjpeg" | "mjpg" => Ok(FormatChoice::Mjpeg),
            "yuyv" | "yuy2" => Ok(FormatChoice::Yuyv),
            "nv12" => Ok(FormatChoice::Nv12),
            other => Err(format!(
                "unknown format {other:?}: expected auto, mjpeg, yuyv or nv12"
            )),
        }
    }
}

impl TryFrom<String> for FormatChoice {
    type Error = String;

    fn try_from(s: String) -> Result<Self, Self::Error> {
        s.parse()
    }
}

impl fmt::Display for FormatChoice {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            FormatChoice::Auto => "auto",
            FormatChoice::Mjpeg => "mjpeg",
            FormatChoice::Yuyv => "yuyv",
            FormatChoice::Nv12 => "nv12",
        })
    }
}

/// Seconds per frame as a fraction, V4L2's `timeperframe`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Interval {
    pub num: u32,
    pub den: u32,
}

impl Interval {
    /// Frames per second; 0 for a degenerate interval.
    pub fn fps(self) -> f64 {
        if self.num == 0 {
            0.0
        } else {
            f64::from(self.den) / f64::from(self.num)
        }
    }

    /// The interval for `fps`, exact for whole and millesimal rates (30 → 1/30, 29.97 →
    /// 1000/29970 reduced).
    pub fn from_fps(fps: f64) -> Interval {
        let fps = if fps.is_finite() {
            fps.clamp(0.001, 1_000_000.0)
        } else {
            30.0
        };
        if fps.fract() == 0.0 {
            return Interval {
                num: 1,
                den: fps as u32,
            };
        }
        let den = (fps * 1000.0).round() as u32;
        let g = gcd(1000, den).max(1);
        Interval {
            num: 1000 / g,
            den: den / g,
        }
    }
}

fn gcd(mut a: u32, mut b: u32) -> u32 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a
}

/// The frame rates a device offers at one size.
#[derive(Debug, Clone, PartialEq)]
pub enum Rates {
    Discrete(Vec<Interval>),
    /// Any interval between `shortest` (highest fps) and `longest` (lowest fps).
    Range {
        shortest: Interval,
        longest: Interval,
    },
    /// The driver did not say (VIDIOC_ENUM_FRAMEINTERVALS unsupported).
    Unknown,
}

#[derive(Debug, Clone, PartialEq)]
pub struct AdvertisedSize {
    pub width: u32,
    pub height: u32,
    pub rates: Rates,
}

/// A continuous or stepwise size range, as VIDIOC_ENUM_FRAMESIZES reports it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SizeRange {
    pub min_width: u32,
    pub max_width: u32,
    pub step_width: u32,
    pub min_height: u32,
    pub max_height: u32,
    pub step_height: u32,
}

impl SizeRange {
    /// Sizes worth asking the driver about for a request: the request snapped into the range,
    /// and the range's largest size. Negotiation then treats them like discrete sizes.
    pub fn candidates(&self, width: u32, height: u32) -> Vec<(u32, u32)> {
        let snap = |v: u32, min: u32, max: u32, step: u32| {
            let v = v.clamp(min, max.max(min));
            let step = step.max(1);
            min + (v - min) / step * step
        };
        let wanted = (
            snap(width, self.min_width, self.max_width, self.step_width),
            snap(height, self.min_height, self.max_height, self.step_height),
        );
        let largest = (self.max_width, self.max_height);
        if wanted == largest {
            vec![wanted]
        } else {
            vec![wanted, largest]
        }
    }
}

/// One advertised pixel format and the sizes it comes in.
#[derive(Debug, Clone, PartialEq)]
pub struct AdvertisedFormat {
    pub fourcc: [u8; 4],
    pub description: String,
    pub sizes: Vec<AdvertisedSize>,
    /// Set when the sizes are a range; `sizes` then holds candidates from [`SizeRange::candidates`].
    pub range: Option<SizeRange>,
}

/// The mode the user asked for.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Request {
    pub width: u32,
    pub height: u32,
    pub fps: f64,
    pub format: FormatChoice,
}

/// What negotiation settled on, and why.
#[derive(Debug, Clone, PartialEq)]
pub struct Choice {
    pub format: PixelFormat,
    pub width: u32,
    pub height: u32,
    /// The interval to ask for with VIDIOC_S_PARM.
    pub interval: Interval,
    /// The requested size and rate are both offered in this format.
    pub exact: bool,
    /// One human-readable sentence: logged at start and suitable for the info call.
    pub reason: String,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum NegotiateError {
    #[error("the camera offers none of {wanted}; it offers {offered}")]
    NoUsableFormat { wanted: String, offered: String },
}

/// Relative fps difference still counted as "as requested" (29.97 for 30 is fine).
const FPS_TOLERANCE: f64 = 0.005;

/// Picks format, size and frame rate. An exact match in the most preferred format wins; failing
/// that, the closest size (then rate) in any acceptable format, preferring earlier formats on ties.
pub fn negotiate(advertised: &[AdvertisedFormat], req: &Request) -> Result<Choice, NegotiateError> {
    let candidates: Vec<Candidate> = req
        .format
        .candidates()
        .iter()
        .enumerate()
        .filter_map(|(rank, &pf)| {
            let offer = advertised.iter().find(|a| a.fourcc == pf.fourcc())?;
            best_in_format(pf, rank, &offer.sizes, req)
        })
        .collect();
    if let Some(exact) = candidates.iter().find(|c| c.is_exact()) {
        let reason = exact_reason(exact, &candidates, req);
        return Ok(exact.choice(true, reason));
    }
    let Some(closest) = candidates.iter().min_by(|a, b| a.cmp_closeness(b)) else {
        return Err(NegotiateError::NoUsableFormat {
            wanted: names(req.format.candidates().iter().map(|p| p.fourcc())),
            offered: names(advertised.iter().map(|a| a.fourcc)),
        });
    };
    let reason = format!(
        "{} is not offered; using the closest mode, {}",
        request_text(req),
        closest.mode_text()
    );
    Ok(closest.choice(false, reason))
}

/// The best mode within one format.
#[derive(Debug, Clone)]
struct Candidate {
    format: PixelFormat,
    /// Position in the preference list.
    rank: usize,
    width: u32,
    height: u32,
    interval: Interval,
    /// |Δwidth| + |Δheight| from the request.
    size_distance: u64,
    /// |Δfps| from the request, 0 when the driver did not list rates.
    fps_distance: f64,
    fps_tolerance: f64,
}

impl Candidate {
    fn is_exact(&self) -> bool {
        self.size_distance == 0 && self.fps_distance <= self.fps_tolerance
    }

    /// Size matters more than rate (a viewer sees the size; a slower rate is still the picture
    /// asked for); then prefer the earlier format.
    fn cmp_closeness(&self, other: &Self) -> std::cmp::Ordering {
        self.size_distance
            .cmp(&other.size_distance)
            .then(self.fps_distance.total_cmp(&other.fps_distance))
            .then(self.rank.cmp(&other.rank))
    }

    fn mode_text(&self) -> String {
        format!(
            "{} {}x{} at {} fps",
            self.format,
            self.width,
            self.height,
            fps_text(self.interval.fps())
        )
    }

    fn choice(&self, exact: bool, reason: String) -> Choice {
        Choice {
            format: self.format,
            width: self.width,
            height: self.height,
            interval: self.interval,
            exact,
            reason,
        }
    }
}

fn best_in_format(
    format: PixelFormat,
    rank: usize,
    sizes: &[AdvertisedSize],
    req: &Request,
) -> Option<Candidate> {
    sizes
        .iter()
        .filter(|s| s.width > 0 && s.height > 0)
        .map(|s| {
            let (interval, fps_distance) = pick_rate(&s.rates, req.fps);
            Candidate {
                format,
                rank,
                width: s.width,
                height: s.height,
                interval,
                size_distance: u64::from(s.width.abs_diff(req.width))
                    + u64::from(s.height.abs_diff(req.height)),
                fps_distance,
                fps_tolerance: req.fps * FPS_TOLERANCE,
            }
        })
        // Equal distance: the larger size (more picture), then the earlier listing.
        .min_by(|a, b| {
            a.size_distance
                .cmp(&b.size_distance)
                .then(a.fps_distance.total_cmp(&b.fps_distance))
                .then(
                    (u64::from(b.width) * u64::from(b.height))
                        .cmp(&(u64::from(a.width) * u64::from(a.height))),
                )
        })
}

/// The offered interval closest to `fps` (ties: the faster one) and its distance in fps.
fn pick_rate(rates: &Rates, fps: f64) -> (Interval, f64) {
    match rates {
        Rates::Discrete(list) => list
            .iter()
            .filter(|i| i.num > 0 && i.den > 0)
            .map(|&i| (i, (i.fps() - fps).abs()))
            .min_by(|a, b| a.1.total_cmp(&b.1).then(b.0.fps().total_cmp(&a.0.fps())))
            .unwrap_or((Interval::from_fps(fps), 0.0)),
        Rates::Range { shortest, longest } => {
            let (low, high) = (longest.fps(), shortest.fps());
            let clamped = fps.clamp(low.min(high), high.max(low));
            (Interval::from_fps(clamped), (clamped - fps).abs())
        }
        Rates::Unknown => (Interval::from_fps(fps), 0.0),
    }
}

fn exact_reason(exact: &Candidate, all: &[Candidate], req: &Request) -> String {
    let passed_over: Vec<String> = all
        .iter()
        .filter(|c| c.rank < exact.rank)
        .map(|c| c.format.to_string())
        .collect();
    let missing: Vec<String> = req.format.candidates()[..exact.rank]
        .iter()
        .filter(|pf| !all.iter().any(|c| c.format == **pf))
        .map(|pf| pf.to_string())
        .collect();
    let mut why = Vec::new();
    if !passed_over.is_empty() {
        why.push(format!(
            "{} not offered at that mode",
            passed_over.join("/")
        ));
    }
    if !missing.is_empty() {
        why.push(format!("no {} on this camera", missing.join("/")));
    }
    let mode = exact.mode_text();
    if why.is_empty() {
        format!("{mode}, as requested")
    } else {
        format!("{mode}, as requested ({})", why.join("; "))
    }
}

fn request_text(req: &Request) -> String {
    let format = match req.format {
        FormatChoice::Auto => String::new(),
        f => format!("{} ", f.candidates()[0]),
    };
    format!(
        "requested {format}{}x{} at {} fps",
        req.width,
        req.height,
        fps_text(req.fps)
    )
}

/// 30 → "30", 7.5 → "7.5", 29.97002997 → "29.97".
pub fn fps_text(fps: f64) -> String {
    let s = format!("{fps:.2}");
    s.trim_end_matches('0').trim_end_matches('.').to_string()
}

fn names(fourccs: impl Iterator<Item = [u8; 4]>) -> String {
    let list: Vec<String> = fourccs.map(fourcc_text).collect();
    if list.is_empty() {
        "no formats at all".into()
    } else {
        list.join(", ")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn iv(fps: u32) -> Interval {
        Interval { num: 1, den: fps }
    }

    fn size(width: u32, height: u32, fps: &[u32]) -> AdvertisedSize {
        AdvertisedSize {
            width,
            height,
            rates: Rates::Discrete(fps.iter().map(|&f| iv(f)).collect()),
        }
    }

    fn format(fourcc: &[u8; 4], sizes: Vec<AdvertisedSize>) -> AdvertisedFormat {
        AdvertisedFormat {
            fourcc: *fourcc,
            description: String::new(),
            sizes,
            range: None,
        }
    }

    fn req(width: u32, height: u32, fps: f64, format: FormatChoice) -> Request {
        Request {
            width,
            height,
            fps,
            format,
        }
    }

    /// A typical UVC webcam: MJPEG up to 1080p30, YUYV 720p only at 10 fps, 480p at 30.
    fn webcam() -> Vec<AdvertisedFormat> {
        vec![
            format(
                b"YUYV",
                vec![size(640, 480, &[30, 15]), size(1280, 720, &[10, 5])],
            ),
            format(
                b"MJPG",
                vec![
                    size(640, 480, &[30, 15]),
                    size(1280, 720, &[30, 15]),
                    size(1920, 1080, &[30]),
                ],
            ),
        ]
    }

    #[test]
    fn auto_prefers_mjpeg_at_the_requested_mode() {
        let c = negotiate(&webcam(), &req(1280, 720, 30.0, FormatChoice::Auto)).unwrap();
        assert_eq!(c.format, PixelFormat::Mjpeg);
        assert_eq!((c.width, c.height, c.interval), (1280, 720, iv(30)));
        assert!(c.exact);
        assert_eq!(c.reason, "MJPG 1280x720 at 30 fps, as requested");
    }

    #[test]
    fn auto_falls_back_to_yuyv_when_mjpeg_lacks_the_mode() {
        let cam = vec![
            format(b"MJPG", vec![size(1920, 1080, &[30])]),
            format(b"YUYV", vec![size(640, 480, &[30])]),
        ];
        let c = negotiate(&cam, &req(640, 480, 30.0, FormatChoice::Auto)).unwrap();
        assert_eq!(c.format, PixelFormat::Yuyv);
        assert!(c.exact);
        assert!(
            c.reason.contains("MJPG not offered at that mode"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn auto_uses_nv12_on_a_camera_with_nothing_else() {
        let cam = vec![
            format(b"RGB3", vec![size(640, 480, &[30])]),
            format(b"NV12", vec![size(640, 480, &[30])]),
        ];
        let c = negotiate(&cam, &req(640, 480, 30.0, FormatChoice::Auto)).unwrap();
        assert_eq!(c.format, PixelFormat::Nv12);
        assert!(
            c.reason.contains("no MJPG/YUYV on this camera"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn closest_size_wins_when_the_exact_one_is_missing() {
        let c = negotiate(&webcam(), &req(1024, 768, 30.0, FormatChoice::Auto)).unwrap();
        // |1024-1280| + |768-720| = 304 beats |1024-640| + |768-480| = 672.
        assert_eq!(
            (c.format, c.width, c.height),
            (PixelFormat::Mjpeg, 1280, 720)
        );
        assert!(!c.exact);
        assert_eq!(
            c.reason,
            "requested 1024x768 at 30 fps is not offered; using the closest mode, MJPG 1280x720 at 30 fps"
        );
    }

    #[test]
    fn closest_rate_is_chosen_at_the_requested_size() {
        let c = negotiate(&webcam(), &req(1280, 720, 60.0, FormatChoice::Yuyv)).unwrap();
        assert_eq!((c.width, c.height, c.interval), (1280, 720, iv(10)));
        assert!(!c.exact);
        assert!(
            c.reason
                .starts_with("requested YUYV 1280x720 at 60 fps is not offered"),
            "{}",
            c.reason
        );
    }

    #[test]
    fn rates_within_half_a_percent_count_as_exact() {
        let cam = vec![format(
            b"MJPG",
            vec![AdvertisedSize {
                width: 640,
                height: 480,
                rates: Rates::Discrete(vec![Interval {
                    num: 1001,
                    den: 30000,
                }]),
            }],
        )];
        let c = negotiate(&cam, &req(640, 480, 30.0, FormatChoice::Auto)).unwrap();
        assert!(c.exact, "{}", c.reason);
        assert_eq!(c.reason, "MJPG 640x480 at 29.97 fps, as requested");
    }

    #[test]
    fn explicit_format_the_camera_lacks_is_an_error_listing_what_it_has() {
        let err = negotiate(&webcam(), &req(640, 480, 30.0, FormatChoice::Nv12)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the camera offers none of NV12; it offers YUYV, MJPG"
        );
    }

    #[test]
    fn camera_without_any_usable_format_is_an_error() {
        let cam = vec![format(b"RGB3", vec![size(640, 480, &[30])])];
        let err = negotiate(&cam, &req(640, 480, 30.0, FormatChoice::Auto)).unwrap_err();
        assert_eq!(
            err.to_string(),
            "the camera offers none of MJPG, YUYV, NV12; it offers RGB3"
        );
        assert!(negotiate(&[], &req(640, 480, 30.0, FormatChoice::Auto)).is_err());
    }

    #[test]
    fn ranged_rates_are_clamped_to_what_is_offered() {
        let range = Rates::Range {
            shortest: iv(60),
            longest: iv(5),
        };
        assert_eq!(pick_rate(&range, 25.0), (iv(25), 0.0));
        assert_eq!(pick_rate(&range, 120.0), (iv(60), 60.0));
        assert_eq!(pick_rate(&range, 1.0), (iv(5), 4.0));
    }

    #[test]
    fn unknown_rates_request_what_the_user_asked() {
        assert_eq!(pick_rate(&Rates::Unknown, 15.0), (iv(15), 0.0));
        assert_eq!(pick_rate(&Rates::Discrete(vec![]), 15.0), (iv(15), 0.0));
    }

    #[test]
    fn discrete_rate_ties_go_to_the_faster() {
        let rates = Rates::Discrete(vec![iv(20), iv(30)]);
        assert_eq!(pick_rate(&rates, 25.0).0, iv(30));
    }

    #[test]
    fn fractional_rates_become_exact_intervals() {
        assert_eq!(Interval::from_fps(30.0), iv(30));
        assert_eq!(Interval::from_fps(7.5), Interval { num: 2, den: 15 });
        assert_eq!(
            Interval::from_fps(29.97),
            Interval {
                num: 100,
                den: 2997
            }
        );
        assert_eq!(Interval { num: 0, den: 30 }.fps(), 0.0);
        assert_eq!(Interval::from_fps(f64::NAN), iv(30));
    }

    #[test]
    fn size_ranges_offer_the_snapped_request_and_the_largest_size() {
        let range = SizeRange {
            min_width: 16,
            max_width: 1920,
            step_width: 8,
            min_height: 16,
            max_height: 1080,
            step_height: 8,
        };
        assert_eq!(range.candidates(645, 481), vec![(640, 480), (1920, 1080)]);
        assert_eq!(range.candidates(4000, 4000), vec![(1920, 1080)]);
        assert_eq!(range.candidates(1, 1), vec![(16, 16), (1920, 1080)]);
        let zero_step = SizeRange {
            step_width: 0,
            step_height: 0,
            ..range
        };
        assert_eq!(zero_step.candidates(645, 481)[0], (645, 481));
    }

    #[test]
    fn format_choice_parses_and_prints() {
        for (text, choice) in [
            ("auto", FormatChoice::Auto),
            ("MJPEG", FormatChoice::Mjpeg),
            ("mjpg", FormatChoice::Mjpeg),
            ("yuyv", FormatChoice::Yuyv),
            ("nv12", FormatChoice::Nv12),
        ] {
            assert_eq!(text.parse::<FormatChoice>(), Ok(choice));
        }
        assert!("h264"
            .parse::<FormatChoice>()
            .unwrap_err()
            .contains("auto, mjpeg, yuyv or nv12"));
        assert_eq!(FormatChoice::Yuyv.to_string(), "yuyv");
        assert_eq!(
            FormatChoice::try_from("NV12".to_string()),
            Ok(FormatChoice::Nv12)
        );
    }

    #[test]
    fn format_choice_reads_from_toml_with_the_same_message() {
        #[derive(Debug, serde::Deserialize)]
        struct Camera {
            format: FormatChoice,
        }
        let cam: Camera = toml::from_str("format = \"mjpeg\"").unwrap();
        assert_eq!(cam.format, FormatChoice::Mjpeg);
        let err = toml::from_str::<Camera>("format = \"h264\"").unwrap_err();
        assert!(
            err.to_string()
                .contains("expected auto, mjpeg, yuyv or nv12"),
            "{err}"
        );
    }

    #[test]
    fn fourcc_text_is_printable() {
        assert_eq!(fourcc_text(*b"MJPG"), "MJPG");
        assert_eq!(fourcc_text(*b"Y8  "), "Y8");
        assert_eq!(fourcc_text([0xFF, b'A', 0, 0]), "?A");
        assert_eq!(fps_text(7.5), "7.5");
        assert_eq!(fps_text(30.0), "30");
    }
}
