//! The journal's frame codec: pure functions over bytes.

const HEADER: usize = 4 + 4 + 8;
/// No single record is anywhere near this; a larger length is corruption.
const MAX_PAYLOAD: u32 = 64 * 1024 * 1024;

pub fn encode_frame(seq: u64, payload: &[u8]) -> Vec<u8> {
    let mut crc = crc32fast::Hasher::new();
    crc.update(&seq.to_le_bytes());
    crc.update(payload);
    let mut out = Vec::with_capacity(HEADER + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_le_bytes());
    out.extend_from_slice(&crc.finalize().to_le_bytes());
    out.extend_from_slice(&seq.to_le_bytes());
    out.extend_from_slice(payload);
    out
}

#[derive(Debug)]
pub struct DecodedFrames {
    pub frames: Vec<(u64, Vec<u8>)>,
    /// Length of the prefix made of whole, valid frames.
    pub valid_len: u64,
}

#[derive(Debug, PartialEq, Eq)]
pub struct FrameError {
    pub offset: u64,
    pub problem: String,
}

/// Decodes frames until the end or a torn tail. A damaged frame that is the
/// last thing in the buffer is a torn write (dropped); damage with whole data
/// after it is corruption (an error).
pub fn decode_frames(bytes: &[u8]) -> Result<DecodedFrames, FrameError> {
    let mut frames = Vec::new();
    let mut offset = 0usize;
    while offset < bytes.len() {
        let rest = &bytes[offset..];
        if rest.len() < HEADER {
            break;
        }
        let len = u32::from_le_bytes([rest[0], rest[1], rest[2], rest[3]]);
        let crc = u32::from_le_bytes([rest[4], rest[5], rest[6], rest[7]]);
        let mut seq_bytes = [0u8; 8];
        seq_bytes.copy_from_slice(&rest[8..16]);
        let seq = u64::from_le_bytes(seq_bytes);
        let end = HEADER + len as usize;
        if len > MAX_PAYLOAD || rest.len() < end {
            // Not enough bytes for what the header claims: torn, or a
            // damaged length; either way nothing whole follows.
            break;
        }
        let payload = &rest[HEADER..end];
        let mut hasher = crc32fast::Hasher::new();
        hasher.update(&seq_bytes);
        hasher.update(payload);
        if hasher.finalize() != crc {
            if rest.len() > end {
                return Err(FrameError {
                    offset: offset as u64,
                    problem: format!(
                        "record {seq} fails its checksum and is followed by {} more bytes",
                        rest.len() - end
                    ),
                });
            }
            break;
        }
        frames.push((seq, payload.to_vec()));
        offset += end;
    }
    Ok(DecodedFrames {
        frames,
        valid_len: offset as u64,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_frames() {
        let mut bytes = encode_frame(1, b"one");
        bytes.extend(encode_frame(2, b""));
        let decoded = decode_frames(&bytes).unwrap();
        assert_eq!(decoded.frames, vec![(1, b"one".to_vec()), (2, Vec::new())]);
        assert_eq!(decoded.valid_len, bytes.len() as u64);
    }

    #[test]
    fn encodes_a_known_layout() {
        let frame = encode_frame(7, b"x");
        assert_eq!(&frame[0..4], &[1, 0, 0, 0]);
        assert_eq!(&frame[8..16], &[7, 0, 0, 0, 0, 0, 0, 0]);
        assert_eq!(frame[16], b'x');
    }

    #[test]
    fn a_flipped_bit_in_the_middle_is_corruption() {
        let mut bytes = encode_frame(1, b"first");
        let second = bytes.len();
        bytes.extend(encode_frame(2, b"second"));
        bytes.extend(encode_frame(3, b"third"));
        bytes[second + HEADER] ^= 1;
        let err = decode_frames(&bytes).unwrap_err();
        assert_eq!(err.offset, second as u64);
    }

    #[test]
    fn a_damaged_last_frame_is_a_torn_tail() {
        let mut bytes = encode_frame(1, b"first");
        let keep = bytes.len() as u64;
        bytes.extend(encode_frame(2, b"second"));
        let last = bytes.len() - 1;
        bytes[last] ^= 1;
        let decoded = decode_frames(&bytes).unwrap();
        assert_eq!(decoded.frames.len(), 1);
        assert_eq!(decoded.valid_len, keep);
    }
}
