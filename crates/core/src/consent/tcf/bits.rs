//! Bit fields in and out of base64url: the two primitives every segment is made of.
//!
//! # Design
//!
//! A TC string field is 1 to 36 bits wide and starts anywhere, so each segment is read and
//! written bit by bit rather than through byte-oriented base64. Decoding maps each base64url
//! character to its 6 bits directly, which accepts every length the IAB library accepts (a
//! segment need not end on a byte boundary) and lets an error name the exact character and the
//! exact bit where a field was cut short. Encoding pads each segment with zero bits to a
//! multiple of 24 bits, as the IAB library does: the text is then a whole number of base64
//! quanta, which every decoder accepts whether or not it expects `=` padding (none is written).

use super::{SegmentKind, TcfError};

const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";

/// The 6-bit value of one base64url character, or `None` for any other character.
fn sextet(c: u8) -> Option<u8> {
    match c {
        b'A'..=b'Z' => Some(c - b'A'),
        b'a'..=b'z' => Some(c - b'a' + 26),
        b'0'..=b'9' => Some(c - b'0' + 52),
        b'-' => Some(62),
        b'_' => Some(63),
        _ => None,
    }
}

/// Reads fields, most significant bit first, from one decoded segment.
pub(super) struct BitReader {
    sextets: Vec<u8>,
    pos: usize,
    segment: SegmentKind,
}

impl BitReader {
    /// Decodes the base64url text of segment number `index` (0-based).
    pub(super) fn new(text: &str, index: usize) -> Result<Self, TcfError> {
        if text.is_empty() {
            return Err(TcfError::EmptySegment { index });
        }
        let sextets = text
            .char_indices()
            .map(|(position, character)| {
                u8::try_from(character)
                    .ok()
                    .and_then(sextet)
                    .ok_or(TcfError::InvalidBase64 {
                        index,
                        position,
                        character,
                    })
            })
            .collect::<Result<Vec<u8>, TcfError>>()?;
        Ok(Self {
            sextets,
            pos: 0,
            segment: SegmentKind::Core,
        })
    }

    /// Names the segment being read, for error messages.
    pub(super) fn set_segment(&mut self, segment: SegmentKind) {
        self.segment = segment;
    }

    /// How many bits the segment has.
    pub(super) fn len(&self) -> usize {
        self.sextets.len() * 6
    }

    fn bit_at(&self, i: usize) -> bool {
        (self.sextets[i / 6] >> (5 - i % 6)) & 1 == 1
    }

    /// Fails unless `width` more bits are available for `field`.
    pub(super) fn require(&self, width: usize, field: &'static str) -> Result<(), TcfError> {
        if self.len() - self.pos < width {
            return Err(TcfError::Truncated {
                segment: self.segment,
                field,
                bit: self.pos,
                length: self.len(),
            });
        }
        Ok(())
    }

    /// The next `width` bits (at most 64) without consuming them.
    pub(super) fn peek(&self, width: u32, field: &'static str) -> Result<u64, TcfError> {
        self.require(width as usize, field)?;
        Ok((self.pos..self.pos + width as usize).fold(0, |acc, i| (acc << 1) | u64::from(self.bit_at(i))))
    }

    /// The next `width` bits (at most 64) as an unsigned integer.
    pub(super) fn int(&mut self, width: u32, field: &'static str) -> Result<u64, TcfError> {
        let value = self.peek(width, field)?;
        self.pos += width as usize;
        Ok(value)
    }

    /// The next bit.
    pub(super) fn bool(&mut self, field: &'static str) -> Result<bool, TcfError> {
        Ok(self.int(1, field)? == 1)
    }
}

/// Writes fields, most significant bit first, into one segment.
#[derive(Default)]
pub(super) struct BitWriter {
    bits: Vec<bool>,
}

impl BitWriter {
    /// Appends the low `width` bits of `value`. Callers pass values their types already bound to
    /// `width` bits; higher bits would be dropped.
    pub(super) fn int(&mut self, value: u64, width: u32) {
        debug_assert!(width == 64 || value >> width == 0, "{value} wider than {width} bits");
        self.bits
            .extend((0..width).rev().map(|shift| (value >> shift) & 1 == 1));
    }

    /// Appends one bit.
    pub(super) fn bool(&mut self, value: bool) {
        self.bits.push(value);
    }

    /// The segment as base64url without padding characters, zero-filled to a multiple of 24 bits.
    pub(super) fn finish(mut self) -> String {
        let padded = self.bits.len().div_ceil(24) * 24;
        self.bits.resize(padded, false);
        self.bits
            .chunks(6)
            .map(|chunk| {
                let value = chunk.iter().fold(0usize, |acc, &b| (acc << 1) | usize::from(b));
                char::from(ALPHABET[value])
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_alphabet_character_decodes_to_its_index() {
        for (i, &c) in ALPHABET.iter().enumerate() {
            assert_eq!(sextet(c), Some(i as u8));
        }
        assert_eq!(sextet(b'+'), None);
        assert_eq!(sextet(b'='), None);
    }

    #[test]
    fn written_fields_read_back_and_pad_to_whole_quanta() {
        let mut w = BitWriter::default();
        w.int(2, 6);
        w.bool(true);
        w.int(0xABCDE, 36);
        let text = w.finish();
        assert_eq!(text.len() % 4, 0);
        let mut r = BitReader::new(&text, 0).unwrap();
        assert_eq!(r.int(6, "a").unwrap(), 2);
        assert!(r.bool("b").unwrap());
        assert_eq!(r.int(36, "c").unwrap(), 0xABCDE);
    }

    #[test]
    fn a_short_segment_names_the_field_and_the_bit() {
        let mut r = BitReader::new("AA", 0).unwrap();
        r.int(6, "x").unwrap();
        assert_eq!(
            r.int(12, "CmpId").unwrap_err(),
            TcfError::Truncated {
                segment: SegmentKind::Core,
                field: "CmpId",
                bit: 6,
                length: 12
            }
        );
    }

    #[test]
    fn a_foreign_character_is_named_with_its_position() {
        assert_eq!(
            BitReader::new("AB=", 2).err(),
            Some(TcfError::InvalidBase64 {
                index: 2,
                position: 2,
                character: '='
            })
        );
        assert!(matches!(
            BitReader::new("Aé", 0),
            Err(TcfError::InvalidBase64 { character: 'é', .. })
        ));
    }
}
