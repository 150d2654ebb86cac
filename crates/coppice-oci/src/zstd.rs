//! Zstandard layers: every frame of a stream decoded in turn (ruzstd's decoder reads one,
//! and `zstd` and `pzstd` may write several), within ruzstd's default window limit, so a
//! crafted frame cannot ask for unbounded memory.

use std::io::{self, BufRead, Read};

use ruzstd::decoding::{FrameDecoder, StreamingDecoder};

/// The frames of a Zstandard stream, decoded one after another.
pub(crate) struct ZstdFrames<R: BufRead> {
    state: Option<Frames<R>>,
}

enum Frames<R: BufRead> {
    /// At a frame boundary (or the stream's start).
    Between(R),
    /// Inside a frame (the decoder holds its window state: boxed, it moves cheaply).
    In(Box<StreamingDecoder<R, FrameDecoder>>),
}

impl<R: BufRead> ZstdFrames<R> {
    pub(crate) fn new(source: R) -> Self {
        Self {
            state: Some(Frames::Between(source)),
        }
    }
}

impl<R: BufRead> Read for ZstdFrames<R> {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        if buf.is_empty() {
            return Ok(0);
        }
        loop {
            match self.state.take() {
                None => return Ok(0),
                Some(Frames::In(mut frame)) => {
                    let read = frame.read(buf)?;
                    if read > 0 {
                        self.state = Some(Frames::In(frame));
                        return Ok(read);
                    }
                    self.state = Some(Frames::Between(frame.into_inner()));
                }
                Some(Frames::Between(mut source)) => {
                    let head = source.fill_buf()?;
                    if head.is_empty() {
                        return Ok(0);
                    }
                    if is_skippable(head) {
                        skip_frame(&mut source)?;
                        self.state = Some(Frames::Between(source));
                        continue;
                    }
                    let frame = StreamingDecoder::new(source).map_err(|error| {
                        io::Error::new(io::ErrorKind::InvalidData, format!("zstd: {error}"))
                    })?;
                    self.state = Some(Frames::In(Box::new(frame)));
                }
            }
        }
    }
}

/// Whether `head` starts a skippable frame (magic `0x184D2A5?`, little-endian): metadata
/// such as `pzstd`'s frame sizes or a zstd:chunked table of contents, no content.
fn is_skippable(head: &[u8]) -> bool {
    matches!(head, [0x50..=0x5f, 0x2a, 0x4d, 0x18, ..])
}

/// Reads past the skippable frame at the start of `source`: its magic, its length, and
/// that many bytes.
fn skip_frame(source: &mut impl BufRead) -> io::Result<()> {
    let mut header = [0u8; 8];
    source.read_exact(&mut header)?;
    let length = u64::from(u32::from_le_bytes([
        header[4], header[5], header[6], header[7],
    ]));
    let skipped = io::copy(&mut source.take(length), &mut io::sink())?;
    if skipped < length {
        return Err(io::Error::new(
            io::ErrorKind::UnexpectedEof,
            "zstd: a skippable frame ends early",
        ));
    }
    Ok(())
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;
    use ruzstd::encoding::{CompressionLevel, compress_to_vec};

    fn decoded(bytes: &[u8]) -> io::Result<Vec<u8>> {
        let mut out = Vec::new();
        ZstdFrames::new(io::BufReader::new(bytes)).read_to_end(&mut out)?;
        Ok(out)
    }

    #[test]
    fn test_every_frame_is_decoded_in_turn() {
        let mut stream = compress_to_vec(&b"first frame, "[..], CompressionLevel::Fastest);
        stream.extend(compress_to_vec(
            &b"second frame"[..],
            CompressionLevel::Fastest,
        ));
        assert_eq!(decoded(&stream).unwrap(), b"first frame, second frame");
        assert_eq!(decoded(&[]).unwrap(), b"");
    }

    #[test]
    fn test_skippable_frames_are_passed_over() {
        // As `pzstd` writes: a skippable frame before each frame, and one at the end.
        let skippable = |content: &[u8]| {
            let mut frame = vec![0x50, 0x2a, 0x4d, 0x18];
            frame.extend(u32::try_from(content.len()).unwrap().to_le_bytes());
            frame.extend(content);
            frame
        };
        let mut stream = skippable(&[1, 2, 3, 4]);
        stream.extend(compress_to_vec(&b"one "[..], CompressionLevel::Fastest));
        stream.extend(skippable(&[5; 4]));
        stream.extend(compress_to_vec(&b"two"[..], CompressionLevel::Fastest));
        stream.extend(skippable(b"table of contents"));
        assert_eq!(decoded(&stream).unwrap(), b"one two");
        let truncated = &skippable(&[0; 16])[..12];
        assert_eq!(
            decoded(truncated).unwrap_err().kind(),
            io::ErrorKind::UnexpectedEof
        );
    }

    #[test]
    fn test_a_corrupt_frame_is_an_error_not_a_short_read() {
        let mut stream = compress_to_vec(&[7u8; 4096][..], CompressionLevel::Fastest);
        stream.extend([0x28, 0xb5, 0x2f, 0xfd, 0xff, 0xff]);
        let error = decoded(&stream).unwrap_err();
        assert_eq!(error.kind(), io::ErrorKind::InvalidData, "{error}");
    }
}
