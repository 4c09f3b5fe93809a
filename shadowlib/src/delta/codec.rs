//! The compact binary encoding of frames and snapshots (postcard: varints, no field names).
//!
//! A delta frame is `epoch, sequence, count` followed by `count` encoded deltas — exactly
//! the postcard encoding of `(u64, u64, Vec<Delta>)`, built without collecting the deltas
//! into a vector first. A frame with no deltas is a heartbeat: it only announces the
//! publisher's position, so a follower notices a lost last frame. A snapshot is the
//! encoding of `(u64, u64, Snapshot)`.

use bytes::Bytes;
use serde::Serialize;
use serde::de::DeserializeOwned;
use thiserror::Error;

use super::{Epoch, Position};

/// A frame, snapshot or delta could not be encoded or decoded.
#[derive(Debug, Error)]
#[error("cannot {action} {what}: {source}")]
pub struct CodecError {
    action: &'static str,
    what: &'static str,
    #[source]
    source: postcard::Error,
}

impl CodecError {
    fn encoding(what: &'static str) -> impl FnOnce(postcard::Error) -> Self {
        move |source| Self {
            action: "encode",
            what,
            source,
        }
    }

    fn decoding(what: &'static str) -> impl FnOnce(postcard::Error) -> Self {
        move |source| Self {
            action: "decode",
            what,
            source,
        }
    }
}

/// The fixed part of a delta frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct FrameHeader {
    pub(super) position: Position,
    /// Deltas that follow; 0 for a heartbeat.
    pub(super) count: u64,
}

/// Appends the encoding of one delta to `buffer`.
pub(super) fn encode_delta<D: Serialize>(
    delta: &D,
    buffer: Vec<u8>,
) -> Result<Vec<u8>, CodecError> {
    postcard::to_extend(delta, buffer).map_err(CodecError::encoding("delta"))
}

/// Encodes a frame holding `deltas` (none: a heartbeat) at `position`.
pub(super) fn encode_frame<D: Serialize>(
    position: Position,
    deltas: &[D],
) -> Result<Bytes, CodecError> {
    let header = (position.epoch.get(), position.sequence, deltas.len() as u64);
    let mut buffer = postcard::to_extend(&header, Vec::with_capacity(16 + 24 * deltas.len()))
        .map_err(CodecError::encoding("frame header"))?;
    for delta in deltas {
        buffer = encode_delta(delta, buffer)?;
    }
    Ok(Bytes::from(buffer))
}

/// Splits a frame into its header and the encoded deltas.
pub(super) fn decode_header(frame: &[u8]) -> Result<(FrameHeader, &[u8]), CodecError> {
    let ((epoch, sequence, count), rest) = postcard::take_from_bytes::<(u64, u64, u64)>(frame)
        .map_err(CodecError::decoding("frame header"))?;
    let position = Position {
        epoch: Epoch::new(epoch),
        sequence,
    };
    Ok((FrameHeader { position, count }, rest))
}

/// Decodes the next delta, returning the bytes after it.
pub(super) fn decode_delta<D: DeserializeOwned>(bytes: &[u8]) -> Result<(D, &[u8]), CodecError> {
    postcard::take_from_bytes(bytes).map_err(CodecError::decoding("delta"))
}

/// Encodes a snapshot taken at `position`.
pub(super) fn encode_snapshot<T: Serialize>(
    position: Position,
    snapshot: &T,
) -> Result<Bytes, CodecError> {
    postcard::to_stdvec(&(position.epoch.get(), position.sequence, snapshot))
        .map(Bytes::from)
        .map_err(CodecError::encoding("snapshot"))
}

/// Decodes a snapshot and the position it was taken at.
pub(super) fn decode_snapshot<T: DeserializeOwned>(
    bytes: &[u8],
) -> Result<(Position, T), CodecError> {
    let (epoch, sequence, snapshot) =
        postcard::from_bytes::<(u64, u64, T)>(bytes).map_err(CodecError::decoding("snapshot"))?;
    let position = Position {
        epoch: Epoch::new(epoch),
        sequence,
    };
    Ok((position, snapshot))
}

#[cfg(test)]
mod tests {
    use super::*;

    const AT: Position = Position {
        epoch: Epoch::new(0xdead_beef),
        sequence: 300,
    };

    #[test]
    fn a_frame_is_the_postcard_encoding_of_a_tuple_with_a_vector() {
        let deltas = vec![(1u8, "a".to_owned()), (2, "bb".to_owned())];
        let frame = encode_frame(AT, &deltas).expect("encodable");
        let as_tuple =
            postcard::to_stdvec(&(AT.epoch.get(), AT.sequence, &deltas)).expect("encodable");
        assert_eq!(frame.as_ref(), as_tuple.as_slice());

        let (header, mut rest) = decode_header(&frame).expect("decodable");
        assert_eq!(
            header,
            FrameHeader {
                position: AT,
                count: 2
            }
        );
        let mut decoded = Vec::new();
        for _ in 0..header.count {
            let (delta, after) = decode_delta::<(u8, String)>(rest).expect("decodable");
            decoded.push(delta);
            rest = after;
        }
        assert_eq!(decoded, deltas);
        assert!(rest.is_empty());
    }

    #[test]
    fn a_heartbeat_has_no_deltas() {
        let frame = encode_frame::<u8>(AT, &[]).expect("encodable");
        let (header, rest) = decode_header(&frame).expect("decodable");
        assert_eq!(header.count, 0);
        assert!(rest.is_empty());
    }

    #[test]
    fn snapshots_round_trip_with_their_position() {
        let bytes = encode_snapshot(AT, &vec![1u32, 2, 3]).expect("encodable");
        let (position, snapshot) = decode_snapshot::<Vec<u32>>(&bytes).expect("decodable");
        assert_eq!((position, snapshot), (AT, vec![1, 2, 3]));
    }

    #[test]
    fn truncated_input_is_an_error_not_a_panic() {
        let frame = encode_frame(AT, &["hello".to_owned()]).expect("encodable");
        let (_, rest) = decode_header(&frame).expect("decodable");
        let error = decode_delta::<String>(&rest[..rest.len() - 1]).expect_err("truncated");
        assert!(error.to_string().starts_with("cannot decode delta"));
        assert!(decode_header(&frame[..1]).is_err());
        assert!(decode_snapshot::<Vec<u32>>(&[0xff]).is_err());
    }
}
