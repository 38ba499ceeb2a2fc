//! `container.log`: the container's output as frames of
//! `[stream: u8][length: u32 little endian][bytes]`, stream 1 for stdout and 2 for
//! stderr, appended by the shim and read by any process.

use std::io::{self, Write};

use locald_core::LogStream;

/// Frame tag for stdout.
pub(crate) const STDOUT: u8 = 1;
/// Frame tag for stderr.
pub(crate) const STDERR: u8 = 2;

/// Appends one frame in a single write, so a reader never sees half a header.
pub(crate) fn write_frame(w: &mut impl Write, stream: u8, data: &[u8]) -> io::Result<()> {
    let mut frame = Vec::with_capacity(5 + data.len());
    frame.push(stream);
    frame.extend_from_slice(&(data.len() as u32).to_le_bytes());
    frame.extend_from_slice(data);
    w.write_all(&frame)
}

/// Parses the complete frames at the start of `buf`; returns them and how many bytes
/// they took.
pub(crate) fn parse_frames(buf: &[u8]) -> (Vec<(LogStream, Vec<u8>)>, usize) {
    let mut out = Vec::new();
    let mut at = 0;
    while buf.len() >= at + 5 {
        let len = u32::from_le_bytes([buf[at + 1], buf[at + 2], buf[at + 3], buf[at + 4]]) as usize;
        if buf.len() < at + 5 + len {
            break;
        }
        let stream = if buf[at] == STDERR {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        out.push((stream, buf[at + 5..at + 5 + len].to_vec()));
        at += 5 + len;
    }
    (out, at)
}

/// Keeps only the last `n` lines of a sequence of chunks.
pub(crate) fn tail(chunks: Vec<(LogStream, Vec<u8>)>, n: usize) -> Vec<(LogStream, Vec<u8>)> {
    // Split into lines, keeping each line's stream.
    let mut lines: Vec<(LogStream, Vec<u8>)> = Vec::new();
    for (stream, data) in chunks {
        for piece in data.split_inclusive(|b| *b == b'\n') {
            match lines.last_mut() {
                Some((s, last)) if *s == stream && !last.ends_with(b"\n") => {
                    last.extend_from_slice(piece)
                }
                _ => lines.push((stream, piece.to_vec())),
            }
        }
    }
    let skip = lines.len().saturating_sub(n);
    lines.into_iter().skip(skip).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_round_trip_and_tail() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDOUT, b"a\nb\n").unwrap();
        write_frame(&mut buf, STDERR, b"c\n").unwrap();
        write_frame(&mut buf, STDOUT, b"par").unwrap();
        let (frames, used) = parse_frames(&buf[..buf.len() - 1]);
        assert_eq!(frames.len(), 2);
        assert!(used < buf.len());
        let (frames, used) = parse_frames(&buf);
        assert_eq!(used, buf.len());
        let last = tail(frames, 2);
        assert_eq!(
            last,
            vec![
                (LogStream::Stderr, b"c\n".to_vec()),
                (LogStream::Stdout, b"par".to_vec())
            ]
        );
    }
}
