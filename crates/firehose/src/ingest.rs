//! The fast path of PutRecordBatch: decodes a request body straight into a chunk.
//!
//! The generic path parses a body into a `serde_json::Value` tree, walks it against the model
//! (measuring every blob), then base64-decodes every record into its own `Vec` and copies them
//! into the chunk. For a 500 x 1 KiB batch (a ~690 KB body) that is most of the server's work.
//! [`decode_put_record_batch`] does it in one pass over the body: it reads the JSON with a
//! cursor, checks the model's constraints as it goes, and base64-decodes each `Data` straight
//! into the [`ChunkBuilder`] the store will commit.
//!
//! # Design constraints
//!
//! - **Exact AWS behaviour by construction.** The decoder accepts only bodies that the generic
//!   path accepts *with the same result*, and declines (`None`) everything else; a declined
//!   body goes the generic way, which produces the errors clients get. So this module never
//!   makes an error message, and error behaviour cannot drift. Accepted is exactly:
//!   - one JSON object (JSON whitespace around tokens allowed) with the members
//!     `DeliveryStreamName` and `Records`, each once, in either order, no other member;
//!   - `DeliveryStreamName`: a string without escapes, 1-64 characters of `[a-zA-Z0-9_.-]`;
//!   - `Records`: an array of 1-500 objects, each with exactly one member, `Data`: a string
//!     without escapes holding standard base64 (padded or not, unused trailing bits allowed:
//!     the leniency of `sluice_wire`'s validation and `decode_blob`) of at most 1,024,000
//!     bytes;
//!   - records totalling at most 4 MiB (`MAX_BATCH_BYTES`).
//!
//!   Anything else (`null`s, escapes, unknown or repeated members, other types, too many or
//!   too large records, invalid base64, trailing bytes) is declined, even when the generic path
//!   would accept it: rare bodies only lose speed. `tests` check the equivalence against the
//!   generic path (same accept/reject, same records) with generated and mutated bodies.
//! - **Bounded work, no panics.** One forward pass; no recursion (the shape is fixed, so the
//!   nesting limit of the generic path cannot be reached); the chunk is allocated once, sized
//!   from the body (decoded data is at most 3/4 of the body).
//!
//! The caller still authorizes, checks the stream and commits the chunk durably before
//! answering, in the generic path's order (see `ops::put_record_batch_raw`).

use base64::Engine as _;

use crate::model::ChunkBuilder;
use crate::ops::MAX_BATCH_BYTES;

/// Most records in one PutRecordBatch call (the model's list bound).
pub const MAX_RECORDS: usize = 500;
/// Largest record (the model's `Data` bound), bytes.
pub const MAX_RECORD_BYTES: usize = 1_024_000;
/// Longest delivery stream name (the model's bound).
const MAX_NAME: usize = 64;

/// The base64 engine of `sluice_wire::decode_blob`: standard alphabet, padding optional,
/// unused trailing bits ignored.
const B64: base64::engine::GeneralPurpose = base64::engine::GeneralPurpose::new(
    &base64::alphabet::STANDARD,
    base64::engine::GeneralPurposeConfig::new()
        .with_decode_padding_mode(base64::engine::DecodePaddingMode::Indifferent)
        .with_decode_allow_trailing_bits(true),
);

/// A PutRecordBatch body decoded by the fast path.
#[derive(Debug)]
pub struct DecodedBatch<'a> {
    /// `DeliveryStreamName`.
    pub stream: &'a str,
    /// The records, in order, as a chunk waiting for its arrival time.
    pub chunk: ChunkBuilder,
}

/// Decodes a PutRecordBatch body; `None` when the body is not in the fast path's accepted form
/// (see the module docs), and the generic path must handle it.
pub fn decode_put_record_batch(body: &[u8]) -> Option<DecodedBatch<'_>> {
    let mut c = Cursor { b: body, i: 0 };
    let mut stream: Option<&str> = None;
    let mut chunk: Option<ChunkBuilder> = None;
    c.expect(b'{')?;
    loop {
        let key = c.plain_string()?;
        c.expect(b':')?;
        match key {
            b"DeliveryStreamName" if stream.is_none() => stream = Some(c.stream_name()?),
            b"Records" if chunk.is_none() => chunk = Some(c.records(body.len())?),
            _ => return None,
        }
        match c.next()? {
            b',' => continue,
            b'}' => break,
            _ => return None,
        }
    }
    c.skip_ws();
    if c.i != body.len() {
        return None;
    }
    Some(DecodedBatch {
        stream: stream?,
        chunk: chunk?,
    })
}

struct Cursor<'a> {
    b: &'a [u8],
    i: usize,
}

impl<'a> Cursor<'a> {
    fn skip_ws(&mut self) {
        while let Some(b' ' | b'\t' | b'\n' | b'\r') = self.b.get(self.i) {
            self.i += 1;
        }
    }

    /// The next byte after whitespace, consumed.
    fn next(&mut self) -> Option<u8> {
        self.skip_ws();
        let c = *self.b.get(self.i)?;
        self.i += 1;
        Some(c)
    }

    fn expect(&mut self, want: u8) -> Option<()> {
        (self.next()? == want).then_some(())
    }

    /// A string's raw bytes, if it has no escapes (and so no quotes, backslashes, or
    /// characters that need escaping inside it).
    fn plain_string(&mut self) -> Option<&'a [u8]> {
        self.expect(b'"')?;
        let start = self.i;
        let len = memchr::memchr(b'"', &self.b[start..])?;
        let s = &self.b[start..start + len];
        self.i = start + len + 1;
        Some(s)
    }

    /// `DeliveryStreamName`: 1-64 characters of `[a-zA-Z0-9_.-]` (which satisfies the model's
    /// length and pattern constraints whatever the pattern's anchoring).
    fn stream_name(&mut self) -> Option<&'a str> {
        let s = self.plain_string()?;
        let ok = (1..=MAX_NAME).contains(&s.len())
            && s.iter()
                .all(|&c| c.is_ascii_alphanumeric() || matches!(c, b'_' | b'.' | b'-'));
        if !ok {
            return None;
        }
        std::str::from_utf8(s).ok()
    }

    /// `Records`: `[{"Data": "<base64>"}, ...]`, decoded into a chunk.
    fn records(&mut self, body_len: usize) -> Option<ChunkBuilder> {
        // Every record takes at least `{"Data":""}` (11 bytes) of the body, more than its
        // 4-byte length prefix, and its data at most 3/4 of its base64: no reallocation.
        let mut chunk = ChunkBuilder::with_capacity(body_len / 4 * 3 + 64);
        self.expect(b'[')?;
        loop {
            if chunk.records() as usize == MAX_RECORDS {
                return None;
            }
            self.expect(b'{')?;
            if self.plain_string()? != b"Data" {
                return None;
            }
            self.expect(b':')?;
            let text = self.plain_string()?;
            let n = decoded_len(text)?;
            if n > MAX_RECORD_BYTES || chunk.data_bytes() as usize + n > MAX_BATCH_BYTES {
                return None;
            }
            chunk
                .push_with(n, |out| match B64.decode_slice(text, out) {
                    Ok(k) if k == n => Ok(()),
                    _ => Err(()),
                })
                .ok()?;
            self.expect(b'}')?;
            match self.next()? {
                b',' => continue,
                b']' => return Some(chunk),
                _ => return None,
            }
        }
    }
}

/// The decoded length of `text` under the rules of `sluice_wire`'s blob validation (padding
/// optional, but when present the text is a multiple of 4 long; a lone trailing character is
/// invalid), or `None`. The alphabet itself is checked by the decoder; a `=` left at the end
/// after removing the padding (the validation rejects it, a lenient decoder might not) is
/// rejected here.
fn decoded_len(text: &[u8]) -> Option<usize> {
    let data = text
        .strip_suffix(b"==")
        .or_else(|| text.strip_suffix(b"="))
        .unwrap_or(text);
    if data.len() != text.len() && !text.len().is_multiple_of(4) {
        return None;
    }
    if data.last() == Some(&b'=') {
        return None;
    }
    let rem = data.len() % 4;
    if rem == 1 {
        return None;
    }
    Some(data.len() / 4 * 3 + rem.saturating_sub(1))
}

#[cfg(test)]
mod tests;
