//! `container.log`: the container's output as frames of
//! `[stream: u8][length: u32 little endian][bytes]`, stream 1 for stdout and 2 for
//! stderr, appended by the shim and read by any process. [`LogCodec`] is the format
//! as a `tokio_util` codec.

use std::io::{self, Write};

use bytes::{Buf, BufMut, Bytes, BytesMut};
use locald_core::LogStream;
use tokio_util::codec::{Decoder, Encoder, LengthDelimitedCodec};

/// Frame tag for stdout.
pub(crate) const STDOUT: u8 = 1;
/// Frame tag for stderr.
pub(crate) const STDERR: u8 = 2;

/// Header bytes: the stream tag and the length.
const HEADER: usize = 5;
/// Largest frame read back. The shim writes at most 32 KiB at a time; a larger length
/// is a damaged file, and is not worth allocating for.
const MAX_FRAME: usize = 1 << 20;

/// The frame format: encodes `(stream tag, bytes)`, decodes `(stream, bytes)`.
#[derive(Debug)]
pub(crate) struct LogCodec {
    frames: LengthDelimitedCodec,
}

impl Default for LogCodec {
    fn default() -> Self {
        LogCodec {
            frames: LengthDelimitedCodec::builder()
                .length_field_offset(1)
                .length_field_length(4)
                .little_endian()
                // The length counts the payload only; keep the header in the frame to
                // read the stream tag from it.
                .length_adjustment(HEADER as isize)
                .num_skip(0)
                .max_frame_length(MAX_FRAME)
                .new_codec(),
        }
    }
}

impl Decoder for LogCodec {
    type Item = (LogStream, Bytes);
    type Error = io::Error;

    fn decode(&mut self, src: &mut BytesMut) -> io::Result<Option<Self::Item>> {
        let Some(mut frame) = self.frames.decode(src)? else {
            return Ok(None);
        };
        let stream = if frame[0] == STDERR {
            LogStream::Stderr
        } else {
            LogStream::Stdout
        };
        frame.advance(HEADER);
        Ok(Some((stream, frame.freeze())))
    }
}

impl Encoder<(u8, &[u8])> for LogCodec {
    type Error = io::Error;

    fn encode(&mut self, (stream, data): (u8, &[u8]), dst: &mut BytesMut) -> io::Result<()> {
        let len = u32::try_from(data.len())
            .ok()
            .filter(|n| *n as usize <= MAX_FRAME)
            .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "log frame too large"))?;
        dst.reserve(HEADER + data.len());
        dst.put_u8(stream);
        dst.put_u32_le(len);
        dst.put_slice(data);
        Ok(())
    }
}

/// Appends one frame in a single write, so a reader never sees half a header. `data`
/// longer than a frame holds is split.
pub(crate) fn write_frame(w: &mut impl Write, stream: u8, data: &[u8]) -> io::Result<()> {
    let mut pieces = data.chunks(MAX_FRAME).peekable();
    if pieces.peek().is_none() {
        return write_one(w, stream, data);
    }
    pieces.try_for_each(|piece| write_one(w, stream, piece))
}

fn write_one(w: &mut impl Write, stream: u8, data: &[u8]) -> io::Result<()> {
    let mut frame = BytesMut::new();
    LogCodec::default().encode((stream, data), &mut frame)?;
    w.write_all(&frame)
}

/// Parses the complete frames at the start of `buf`; returns them and how many bytes
/// they took. A damaged frame ends the parse, as an incomplete one does.
pub(crate) fn parse_frames(buf: &[u8]) -> (Vec<(LogStream, Vec<u8>)>, usize) {
    let mut codec = LogCodec::default();
    let mut src = BytesMut::from(buf);
    let mut out = Vec::new();
    let mut used = 0;
    while let Ok(Some((stream, data))) = codec.decode(&mut src) {
        used = buf.len() - src.len();
        out.push((stream, data.to_vec()));
    }
    (out, used)
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

    #[test]
    fn the_byte_layout_is_kept_and_damage_stops_the_parse() {
        let mut buf = Vec::new();
        write_frame(&mut buf, STDERR, b"hi").unwrap();
        assert_eq!(buf, [2, 2, 0, 0, 0, b'h', b'i']);
        // An empty frame is a frame.
        write_frame(&mut buf, STDOUT, b"").unwrap();
        let (frames, used) = parse_frames(&buf);
        assert_eq!(used, buf.len());
        assert_eq!(
            frames,
            [
                (LogStream::Stderr, b"hi".to_vec()),
                (LogStream::Stdout, Vec::new())
            ]
        );
        // A length no writer produces: nothing past it is read, nothing allocated.
        let mut damaged = buf.clone();
        damaged.extend_from_slice(&[1, 0xff, 0xff, 0xff, 0xff, b'x']);
        let (frames, used) = parse_frames(&damaged);
        assert_eq!((frames.len(), used), (2, buf.len()));
    }
}
