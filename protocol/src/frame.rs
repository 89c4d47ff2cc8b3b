//! Kafka frames: a 4-byte big-endian length, then that many bytes.
//!
//! The length is checked against the configured maximum before anything is allocated for
//! the body, so a hostile or broken peer cannot make the broker reserve gigabytes.

use bytes::{Buf, Bytes, BytesMut};

/// Bytes in the length prefix.
pub const LENGTH_PREFIX_BYTES: usize = 4;

/// Why a frame was refused. Either way the connection is closed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FrameError {
    #[error("frame of {size} bytes exceeds the maximum of {max} bytes (socket.request.max.bytes)")]
    TooLarge { size: usize, max: usize },
    #[error("negative frame length {0}")]
    NegativeLength(i32),
}

/// Reads the length prefix at the front of `buf` without consuming it. `None` until all
/// four bytes are there.
pub fn peek_length(buf: &[u8], max_frame_bytes: usize) -> Result<Option<usize>, FrameError> {
    if buf.len() < LENGTH_PREFIX_BYTES {
        return Ok(None);
    }
    let raw = i32::from_be_bytes([buf[0], buf[1], buf[2], buf[3]]);
    if raw < 0 {
        return Err(FrameError::NegativeLength(raw));
    }
    let size = raw as usize;
    if size > max_frame_bytes {
        return Err(FrameError::TooLarge {
            size,
            max: max_frame_bytes,
        });
    }
    Ok(Some(size))
}

/// Splits one whole frame body off the front of `buf`, or returns `None` when more bytes
/// are needed. The caller reserves `LENGTH_PREFIX_BYTES + length` only after
/// [`peek_length`] accepted the length.
pub fn split_frame(
    buf: &mut BytesMut,
    max_frame_bytes: usize,
) -> Result<Option<Bytes>, FrameError> {
    let Some(size) = peek_length(buf, max_frame_bytes)? else {
        return Ok(None);
    };
    if buf.len() < LENGTH_PREFIX_BYTES + size {
        return Ok(None);
    }
    buf.advance(LENGTH_PREFIX_BYTES);
    Ok(Some(buf.split_to(size).freeze()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn waits_for_whole_frames_and_splits_them_in_order() {
        let mut buf = BytesMut::new();
        buf.extend_from_slice(&[0, 0, 0, 3, b'a', b'b']);
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        buf.extend_from_slice(&[b'c', 0, 0, 0, 1, b'z']);
        assert_eq!(
            split_frame(&mut buf, 100).unwrap().unwrap(),
            Bytes::from_static(b"abc")
        );
        assert_eq!(
            split_frame(&mut buf, 100).unwrap().unwrap(),
            Bytes::from_static(b"z")
        );
        assert_eq!(split_frame(&mut buf, 100), Ok(None));
        assert!(buf.is_empty());
    }

    #[test]
    fn refuses_oversized_and_negative_lengths_before_the_body_arrives() {
        let mut buf = BytesMut::from(&[0x7f, 0xff, 0xff, 0xff][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(FrameError::TooLarge {
                size: 0x7fff_ffff,
                max: 1024
            })
        );
        let mut buf = BytesMut::from(&[0xff, 0xff, 0xff, 0xfe][..]);
        assert_eq!(
            split_frame(&mut buf, 1024),
            Err(FrameError::NegativeLength(-2))
        );
    }
}
