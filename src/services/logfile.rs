//! A service's log file: one record a line, in the CRI logging format that kubelet
//! writes for containers (`<RFC 3339 time> <stdout|stderr> <F|P> <text>`).
//!
//! Each line keeps the time it arrived and its stream, so the logs of several services
//! interleave by time (`locald logs` of a project) and stderr stays stderr; tools that
//! read Kubernetes container logs read these files too. A line longer than
//! [`MAX_LINE`] is split into partial records (`P`) and a final one (`F`), which
//! [`read_tail`] joins again; a line from a file without records (written before this
//! format) is read as it is, without a time.

use std::io::{Read, Seek, SeekFrom};
use std::path::Path;
use std::time::SystemTime;

use locald_core::LogStream;

/// The longest line kept in one record; a longer one is split, as docker and
/// kubelet split theirs at 16 KiB.
pub const MAX_LINE: usize = 16 << 10;

/// One line of a log file.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub struct LogRecord {
    /// When the line arrived (`None`: a line of a file written before records).
    pub time: Option<SystemTime>,
    /// Its stream (`None`: as for `time`).
    pub stream: Option<LogStream>,
    /// The line, without its newline.
    pub line: String,
}

/// Appends `line`'s record to `out`; `partial` when the line goes on in the next record.
pub(crate) fn write_record(
    out: &mut Vec<u8>,
    time: SystemTime,
    stream: LogStream,
    line: &str,
    partial: bool,
) {
    let stream = stream.as_str();
    let tag = if partial { 'P' } else { 'F' };
    out.extend_from_slice(
        format!("{} {stream} {tag} ", humantime::format_rfc3339_nanos(time)).as_bytes(),
    );
    out.extend_from_slice(line.as_bytes());
    out.push(b'\n');
}

/// One record's parts: time, stream, whether it is partial, text. `None` for a line
/// that is not a record.
fn parse_record(line: &str) -> Option<(SystemTime, LogStream, bool, &str)> {
    let (time, rest) = line.split_once(' ')?;
    let (stream, rest) = rest.split_once(' ')?;
    let (tag, text) = rest.split_at_checked(1)?;
    let text = text
        .strip_prefix(' ')
        .or_else(|| text.is_empty().then_some(""))?;
    let stream = match stream {
        "stdout" => LogStream::Stdout,
        "stderr" => LogStream::Stderr,
        _ => return None,
    };
    let partial = match tag {
        "P" => true,
        "F" => false,
        _ => return None,
    };
    let time = humantime::parse_rfc3339(time).ok()?;
    Some((time, stream, partial, text))
}

/// Reads at most this much of a log's end for its last lines.
const TAIL_READ: u64 = 8 << 20;

/// The last `n` lines of the log at `path` (all of them with `None`), partial records
/// joined; nothing when there is no log. Reads at most the last 8 MiB.
pub fn read_tail(path: &Path, n: Option<usize>) -> Vec<LogRecord> {
    let Ok(mut file) = std::fs::File::open(path) else {
        return Vec::new();
    };
    let len = file.metadata().map_or(0, |m| m.len());
    let start = len.saturating_sub(TAIL_READ);
    let mut bytes = Vec::new();
    if file.seek(SeekFrom::Start(start)).is_err() || file.read_to_end(&mut bytes).is_err() {
        return Vec::new();
    }
    let text = String::from_utf8_lossy(&bytes);
    let mut lines = text.lines();
    if start > 0 {
        // The first line read is most likely the end of a longer one.
        let _ = lines.next();
    }
    let mut records: Vec<LogRecord> = Vec::new();
    // A line being joined from partial records, per stream.
    let mut open: [Option<LogRecord>; 2] = [None, None];
    for line in lines {
        let Some((time, stream, partial, text)) = parse_record(line) else {
            records.push(LogRecord {
                time: None,
                stream: None,
                line: line.to_owned(),
            });
            continue;
        };
        let slot = &mut open[usize::from(stream == LogStream::Stderr)];
        let record = match slot.take() {
            Some(mut started) => {
                started.line.push_str(text);
                started
            }
            None => LogRecord {
                time: Some(time),
                stream: Some(stream),
                line: text.to_owned(),
            },
        };
        if partial {
            *slot = Some(record);
        } else {
            records.push(record);
        }
    }
    // A line whose last part was never written (the service was killed mid-line).
    records.extend(open.into_iter().flatten());
    let from = n.map_or(0, |n| records.len().saturating_sub(n));
    records.split_off(from)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn at(ms: u64) -> SystemTime {
        SystemTime::UNIX_EPOCH + Duration::from_millis(1_764_800_000_000 + ms)
    }

    #[test]
    fn records_read_back_with_their_time_and_stream_and_long_lines_joined() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("web.log");
        let mut out = b"an old line\n".to_vec();
        write_record(&mut out, at(1), LogStream::Stdout, "first", false);
        write_record(&mut out, at(2), LogStream::Stdout, "long ", true);
        // A stderr line between the parts of a stdout one.
        write_record(&mut out, at(3), LogStream::Stderr, "oops", false);
        write_record(&mut out, at(4), LogStream::Stdout, "line", false);
        write_record(&mut out, at(5), LogStream::Stdout, "", false);
        write_record(&mut out, at(6), LogStream::Stdout, "cut ", true);
        std::fs::write(&path, &out).unwrap();

        let all = read_tail(&path, None);
        let got: Vec<(Option<SystemTime>, Option<LogStream>, &str)> = all
            .iter()
            .map(|r| (r.time, r.stream, r.line.as_str()))
            .collect();
        assert_eq!(
            got,
            [
                (None, None, "an old line"),
                (Some(at(1)), Some(LogStream::Stdout), "first"),
                (Some(at(3)), Some(LogStream::Stderr), "oops"),
                (Some(at(2)), Some(LogStream::Stdout), "long line"),
                (Some(at(5)), Some(LogStream::Stdout), ""),
                (Some(at(6)), Some(LogStream::Stdout), "cut "),
            ]
        );
        let last = read_tail(&path, Some(2));
        assert_eq!(last, all[4..]);
        assert!(read_tail(&dir.path().join("none.log"), None).is_empty());
    }

    #[test]
    fn the_record_format_is_cri() {
        let mut out = Vec::new();
        write_record(&mut out, at(0), LogStream::Stderr, "a b", false);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "2025-12-03T22:13:20.000000000Z stderr F a b\n"
        );
        assert_eq!(parse_record("2025-12-03T22:13:20Z stdout X a"), None);
        assert_eq!(parse_record("not a record"), None);
    }
}
