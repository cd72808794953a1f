//! A bounds-checked reader for the protobuf wire format: varints, keys, length-delimited
//! slices, fixed64, and skipping of unknown fields (including proto2 groups).
//!
//! Every error names an absolute byte offset into the request body, so a client author can
//! find the bad byte with a hex dump.

use crate::DecodeError;

pub(crate) const VARINT: u8 = 0;
pub(crate) const FIXED64: u8 = 1;
pub(crate) const LEN: u8 = 2;
pub(crate) const START_GROUP: u8 = 3;
pub(crate) const END_GROUP: u8 = 4;
pub(crate) const FIXED32: u8 = 5;

pub(crate) fn wire_type_name(wt: u8) -> &'static str {
    match wt {
        VARINT => "varint",
        FIXED64 => "fixed64",
        LEN => "length-delimited",
        START_GROUP => "start-group",
        END_GROUP => "end-group",
        FIXED32 => "fixed32",
        _ => "invalid",
    }
}

/// A cursor over one message's bytes; `base` is the offset of `buf[0]` in the whole body.
pub(crate) struct Reader<'a> {
    buf: &'a [u8],
    pos: usize,
    base: usize,
}

impl<'a> Reader<'a> {
    pub(crate) fn new(buf: &'a [u8], base: usize) -> Self {
        Reader { buf, pos: 0, base }
    }

    pub(crate) fn is_empty(&self) -> bool {
        self.pos >= self.buf.len()
    }

    /// Absolute offset of the next byte.
    pub(crate) fn offset(&self) -> usize {
        self.base + self.pos
    }

    pub(crate) fn varint(&mut self) -> Result<u64, DecodeError> {
        let start = self.offset();
        let mut value: u64 = 0;
        for i in 0..10 {
            let Some(&b) = self.buf.get(self.pos) else {
                return Err(DecodeError::TruncatedVarint { offset: start });
            };
            self.pos += 1;
            if i == 9 && b > 1 {
                return Err(DecodeError::VarintOverflow { offset: start });
            }
            value |= u64::from(b & 0x7f) << (7 * i);
            if b & 0x80 == 0 {
                return Ok(value);
            }
        }
        Err(DecodeError::VarintOverflow { offset: start })
    }

    /// A field key: (field number, wire type).
    pub(crate) fn key(&mut self) -> Result<(u32, u8), DecodeError> {
        let offset = self.offset();
        let key = self.varint()?;
        let wire_type = (key & 7) as u8;
        let tag = key >> 3;
        if tag == 0 || tag > u64::from(u32::MAX >> 3) {
            return Err(DecodeError::InvalidFieldNumber { tag, offset });
        }
        if wire_type > FIXED32 {
            return Err(DecodeError::InvalidWireType { wire_type, offset });
        }
        Ok((tag as u32, wire_type))
    }

    /// A length-delimited payload and the absolute offset where it starts.
    pub(crate) fn bytes(&mut self) -> Result<(&'a [u8], usize), DecodeError> {
        let offset = self.offset();
        let len = self.varint()?;
        let start = self.pos;
        let remaining = self.buf.len() - start;
        if len > remaining as u64 {
            return Err(DecodeError::Truncated {
                offset,
                needed: len,
                available: remaining,
            });
        }
        self.pos += len as usize;
        Ok((&self.buf[start..self.pos], self.base + start))
    }

    pub(crate) fn fixed64(&mut self) -> Result<u64, DecodeError> {
        self.fixed::<8>().map(u64::from_le_bytes)
    }

    fn fixed<const N: usize>(&mut self) -> Result<[u8; N], DecodeError> {
        let offset = self.offset();
        let remaining = self.buf.len() - self.pos;
        if remaining < N {
            return Err(DecodeError::Truncated {
                offset,
                needed: N as u64,
                available: remaining,
            });
        }
        let mut out = [0u8; N];
        out.copy_from_slice(&self.buf[self.pos..self.pos + N]);
        self.pos += N;
        Ok(out)
    }

    /// Skips the value of a field whose key was just read.
    pub(crate) fn skip(&mut self, tag: u32, wire_type: u8) -> Result<(), DecodeError> {
        match wire_type {
            VARINT => self.varint().map(drop),
            FIXED64 => self.fixed::<8>().map(drop),
            LEN => self.bytes().map(drop),
            FIXED32 => self.fixed::<4>().map(drop),
            START_GROUP => loop {
                if self.is_empty() {
                    return Err(DecodeError::UnterminatedGroup {
                        tag,
                        offset: self.offset(),
                    });
                }
                let (inner, wt) = self.key()?;
                if wt == END_GROUP {
                    if inner == tag {
                        return Ok(());
                    }
                    return Err(DecodeError::UnterminatedGroup {
                        tag,
                        offset: self.offset(),
                    });
                }
                self.skip(inner, wt)?;
            },
            _ => Err(DecodeError::UnexpectedEndGroup {
                tag,
                offset: self.offset(),
            }),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_multi_byte_and_negative_varints() {
        let mut r = Reader::new(&[0xac, 0x02], 0);
        assert_eq!(r.varint().unwrap(), 300);
        // int32 -1 is sign-extended to 10 bytes on the wire.
        let neg = [0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x01];
        let mut r = Reader::new(&neg, 0);
        assert_eq!(r.varint().unwrap() as i64 as i32, -1);
        assert!(r.is_empty());
    }

    #[test]
    fn reports_truncation_with_absolute_offsets() {
        let mut r = Reader::new(&[0x80, 0x80], 7);
        assert_eq!(
            r.varint().unwrap_err(),
            DecodeError::TruncatedVarint { offset: 7 }
        );
        let mut r = Reader::new(&[0x05, b'a'], 3);
        assert_eq!(
            r.bytes().unwrap_err(),
            DecodeError::Truncated {
                offset: 3,
                needed: 5,
                available: 1
            }
        );
        let eleven = [0xff; 11];
        assert_eq!(
            Reader::new(&eleven, 0).varint().unwrap_err(),
            DecodeError::VarintOverflow { offset: 0 }
        );
    }

    #[test]
    fn skips_groups_and_fixed_fields() {
        // field 1 start-group { field 2 varint 1 } field 1 end-group, field 3 fixed32, field 4 fixed64
        let buf = [
            0x0b, 0x10, 0x01, 0x0c, 0x1d, 1, 2, 3, 4, 0x21, 1, 2, 3, 4, 5, 6, 7, 8,
        ];
        let mut r = Reader::new(&buf, 0);
        while !r.is_empty() {
            let (tag, wt) = r.key().unwrap();
            r.skip(tag, wt).unwrap();
        }
        let mut r = Reader::new(&[0x0b, 0x10, 0x01], 0);
        let (tag, wt) = r.key().unwrap();
        assert!(matches!(
            r.skip(tag, wt),
            Err(DecodeError::UnterminatedGroup { tag: 1, .. })
        ));
    }

    #[test]
    fn rejects_field_number_zero_and_wire_types_six_and_seven() {
        assert!(matches!(
            Reader::new(&[0x02], 0).key(),
            Err(DecodeError::InvalidFieldNumber { tag: 0, .. })
        ));
        assert!(matches!(
            Reader::new(&[0x0e], 0).key(),
            Err(DecodeError::InvalidWireType { wire_type: 6, .. })
        ));
    }
}
