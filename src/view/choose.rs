//! `camcast-view` without an address: which camera to watch among those found on the LAN
//! ([`crate::discovery::browse`]), asked on the terminal when there are several, and the exit
//! status when there is none. Also `--list`'s table.

use std::fmt::Write as _;
use std::io::{BufRead, IsTerminal, Write};
use std::time::Duration;

use crate::discovery::{browse, DiscoveryError, Found, SERVICE_TYPE};

/// The found cameras as a table with a numbered first column.
pub fn table(found: &[Found]) -> String {
    let mut rows = vec![[
        "#".to_string(),
        "NAME".into(),
        "CAMERA".into(),
        "CAMERAS".into(),
        "SIZE".into(),
        "FPS".into(),
        "API".into(),
        "ADDRESS".into(),
    ]];
    for (i, f) in found.iter().enumerate() {
        rows.push([
            (i + 1).to_string(),
            f.instance.clone(),
            txt_or_dash(f, "camera").to_string(),
            // The server's camera names (`camcast-view HOST --camera NAME`); older servers
            // have one camera and say nothing.
            txt_or_dash(f, "cams").to_string(),
            txt_or_dash(f, "res").to_string(),
            txt_or_dash(f, "fps").to_string(),
            txt_or_dash(f, "api").to_string(),
            f.target()
                .unwrap_or_else(|| "(IPv6 link-local only)".into()),
        ]);
    }
    let widths: Vec<usize> = (0..8)
        .map(|c| rows.iter().map(|r| r[c].chars().count()).max().unwrap_or(0))
        .collect();
    let mut out = String::new();
    for row in &rows {
        let mut line = String::new();
        for (cell, w) in row.iter().zip(&widths) {
            let _ = write!(line, "{cell:<w$}  ");
        }
        out += line.trim_end();
        out.push('\n');
    }
    out
}

fn txt_or_dash<'a>(f: &'a Found, key: &str) -> &'a str {
    f.txt.get(key).map_or("-", String::as_str)
}

/// Why no camera could be picked. [`ChooseError::exit_code`] is what `camcast-view` exits with.
#[derive(Debug, thiserror::Error)]
pub enum ChooseError {
    #[error(
        "no camera found: searched the LAN for {SERVICE_TYPE} by mDNS for {:.1} s. Is the camera \
         on this network, running, and advertising (not --no-mdns)? Or give its address: \
         camcast-view HOST[:PORT]",
        waited.as_secs_f64()
    )]
    NoneFound { waited: Duration },
    #[error(
        "found only cameras without a usable address (IPv6 link-local only):\n{table}\
         give an address: camcast-view HOST[:PORT]"
    )]
    NoUsableAddress { table: String },
    #[error("{count} cameras found and no terminal to ask which one:\n{table}pick one: camcast-view ADDRESS")]
    Several { count: usize, table: String },
    #[error("no camera chosen: {0}")]
    NotChosen(String),
    #[error(transparent)]
    Discovery(#[from] DiscoveryError),
}

/// `camcast-view`'s exit status when no camera was found (documented in its `--help`).
pub const EXIT_NONE_FOUND: u8 = 7;

impl ChooseError {
    pub fn exit_code(&self) -> u8 {
        match self {
            ChooseError::NoneFound { .. } | ChooseError::NoUsableAddress { .. } => EXIT_NONE_FOUND,
            ChooseError::Several { .. } | ChooseError::NotChosen(_) => 2,
            ChooseError::Discovery(_) => 1,
        }
    }
}

/// Where to ask the user which camera to watch, if anywhere.
pub enum Prompt<'a> {
    /// stdin is not a terminal: never ask.
    Never,
    /// Ask on `output` (stderr) and read the answer from `input`.
    Ask {
        input: &'a mut dyn BufRead,
        output: &'a mut dyn Write,
    },
}

/// The policy for `camcast-view` with no address: exactly one usable camera → it; none → an
/// error saying what was searched; several → a numbered list and a question, or an error
/// listing them when there is nobody to ask.
pub fn choose(found: Vec<Found>, waited: Duration, prompt: Prompt) -> Result<Found, ChooseError> {
    if found.is_empty() {
        return Err(ChooseError::NoneFound { waited });
    }
    let (usable, unusable): (Vec<Found>, Vec<Found>) =
        found.into_iter().partition(|f| f.target().is_some());
    match usable.len() {
        0 => Err(ChooseError::NoUsableAddress {
            table: table(&unusable),
        }),
        1 => Ok(usable.into_iter().next().expect("one")),
        count => match prompt {
            Prompt::Never => Err(ChooseError::Several {
                count,
                table: table(&usable),
            }),
            Prompt::Ask { input, output } => ask(usable, input, output),
        },
    }
}

fn ask(
    mut usable: Vec<Found>,
    input: &mut dyn BufRead,
    output: &mut dyn Write,
) -> Result<Found, ChooseError> {
    let io = |e: std::io::Error| ChooseError::NotChosen(e.to_string());
    write!(
        output,
        "{} cameras found:\n{}",
        usable.len(),
        table(&usable)
    )
    .map_err(io)?;
    loop {
        write!(output, "watch which one? [1-{}]: ", usable.len()).map_err(io)?;
        output.flush().map_err(io)?;
        let mut line = String::new();
        if input.read_line(&mut line).map_err(io)? == 0 {
            return Err(ChooseError::NotChosen("end of input".into()));
        }
        match line.trim().parse::<usize>() {
            Ok(n) if (1..=usable.len()).contains(&n) => return Ok(usable.swap_remove(n - 1)),
            _ => writeln!(
                output,
                "{:?} is not a number from 1 to {}",
                line.trim(),
                usable.len()
            )
            .map_err(io)?,
        }
    }
}

/// Browses, chooses (asking on stderr when stdin is a terminal) and returns the target to
/// connect to. Progress goes to stderr.
pub fn find_target(timeout: Duration) -> Result<String, ChooseError> {
    eprintln!(
        "no address given: looking for cameras on the LAN ({SERVICE_TYPE}, {:.1} s)",
        timeout.as_secs_f64()
    );
    let found = browse(timeout)?;
    let stdin = std::io::stdin();
    let (mut input, mut stderr) = (stdin.lock(), std::io::stderr());
    let prompt = if stdin.is_terminal() {
        Prompt::Ask {
            input: &mut input,
            output: &mut stderr,
        }
    } else {
        Prompt::Never
    };
    let chosen = choose(found, timeout, prompt)?;
    let target = chosen
        .target()
        .expect("choose returns cameras with an address");
    eprintln!("watching \"{}\" at {target}", chosen.instance);
    Ok(target)
}

/// `camcast-view --list`: prints the table on stdout. Returns the exit status: 0 when any
/// camera answered, [`EXIT_NONE_FOUND`] when none did, 1 when mDNS could not start.
pub fn list(timeout: Duration) -> u8 {
    match browse(timeout) {
        Ok(found) if found.is_empty() => {
            eprintln!(
                "camcast-view: {}",
                ChooseError::NoneFound { waited: timeout }
            );
            EXIT_NONE_FOUND
        }
        Ok(found) => {
            print!("{}", table(&found));
            0
        }
        Err(e) => {
            eprintln!("camcast-view: {e}");
            1
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::discovery::browse::tests::found;
    use crate::discovery::browse::DEFAULT_BROWSE;

    #[test]
    fn choose_none_explains_what_was_searched_and_how_to_give_an_address() {
        let err = choose(vec![], Duration::from_secs(2), Prompt::Never).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("_camcast._tcp")
                && msg.contains("2.0 s")
                && msg.contains("camcast-view HOST"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), EXIT_NONE_FOUND);
        let err = choose(
            vec![found("a", &["fe80::1"], 1)],
            Duration::from_secs(2),
            Prompt::Never,
        )
        .unwrap_err();
        assert!(matches!(err, ChooseError::NoUsableAddress { .. }), "{err}");
    }

    #[test]
    fn choose_takes_the_only_usable_camera_without_asking() {
        let list = vec![found("a", &["fe80::1"], 1), found("b", &["10.0.0.2"], 2)];
        assert_eq!(
            choose(list, DEFAULT_BROWSE, Prompt::Never)
                .unwrap()
                .instance,
            "b"
        );
    }

    #[test]
    fn choose_among_several_without_a_terminal_lists_them() {
        let list = vec![found("a", &["10.0.0.1"], 1), found("b", &["10.0.0.2"], 2)];
        let err = choose(list, DEFAULT_BROWSE, Prompt::Never).unwrap_err();
        let msg = err.to_string();
        assert!(
            msg.contains("10.0.0.1:1") && msg.contains("10.0.0.2:2") && msg.contains("cam of b"),
            "{msg}"
        );
        assert_eq!(err.exit_code(), 2);
    }

    #[test]
    fn choose_among_several_asks_until_a_valid_number() {
        let list = || vec![found("a", &["10.0.0.1"], 1), found("b", &["10.0.0.2"], 2)];
        let mut input: &[u8] = b"x\n9\n2\n";
        let mut output = Vec::new();
        let got = choose(
            list(),
            DEFAULT_BROWSE,
            Prompt::Ask {
                input: &mut input,
                output: &mut output,
            },
        )
        .unwrap();
        assert_eq!(got.instance, "b");
        let shown = String::from_utf8(output).unwrap();
        assert_eq!(
            shown.matches("watch which one? [1-2]").count(),
            3,
            "{shown}"
        );
        assert!(
            shown.contains("\"9\" is not a number from 1 to 2"),
            "{shown}"
        );

        let mut eof: &[u8] = b"";
        let err = choose(
            list(),
            DEFAULT_BROWSE,
            Prompt::Ask {
                input: &mut eof,
                output: &mut Vec::new(),
            },
        )
        .unwrap_err();
        assert!(matches!(err, ChooseError::NotChosen(_)), "{err}");
    }

    #[test]
    fn table_lists_each_hosts_camera_names() {
        let mut f = found("camcast on a", &["10.0.0.1"], 1234);
        f.txt.insert("cams".into(), "door,yard".into());
        let t = table(&[f]);
        let lines: Vec<&str> = t.lines().collect();
        let col = lines[0].find("CAMERAS").unwrap();
        assert_eq!(&lines[1][col..col + 9], "door,yard", "{t}");
    }

    #[test]
    fn table_aligns_columns_under_a_header() {
        let t = table(&[
            found("camcast on a", &["10.0.0.1"], 1234),
            found("b", &["fe80::1"], 1),
        ]);
        let lines: Vec<&str> = t.lines().collect();
        assert_eq!(lines.len(), 3, "{t}");
        let cams = lines[0].find("CAMERAS").unwrap();
        assert_eq!(&lines[1][cams..cams + 2], "- ", "{t}");
        let col = lines[0].find("CAMERA").unwrap();
        assert_eq!(&lines[1][col..col + 15], "cam of camcast ");
        assert!(
            lines[1].ends_with("10.0.0.1:1234") && lines[2].ends_with("(IPv6 link-local only)"),
            "{t}"
        );
    }
}
