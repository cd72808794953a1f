//! A minimal protobuf writer: just the wire types gnostic's OpenAPIv2 messages use (varint,
//! 64-bit double, length-delimited). Proto3 semantics: zero values are not written.

#[derive(Default)]
pub(crate) struct Writer {
    pub buf: Vec<u8>,
}

impl Writer {
    fn varint(&mut self, mut v: u64) {
        while v >= 0x80 {
            self.buf.push((v as u8) | 0x80);
            v >>= 7;
        }
        self.buf.push(v as u8);
    }

    fn tag(&mut self, field: u32, wire: u8) {
        self.varint((u64::from(field) << 3) | u64::from(wire));
    }

    pub fn bytes(&mut self, field: u32, data: &[u8]) {
        self.tag(field, 2);
        self.varint(data.len() as u64);
        self.buf.extend_from_slice(data);
    }

    /// A string field; empty strings are omitted.
    pub fn string(&mut self, field: u32, s: &str) {
        if !s.is_empty() {
            self.bytes(field, s.as_bytes());
        }
    }

    /// An element of a repeated string field (written even when empty).
    pub fn repeated_string(&mut self, field: u32, s: &str) {
        self.bytes(field, s.as_bytes());
    }

    pub fn bool(&mut self, field: u32, b: bool) {
        if b {
            self.tag(field, 0);
            self.varint(1);
        }
    }

    /// A bool member of a `oneof`: written even when false, since being set is the point.
    pub fn bool_oneof(&mut self, field: u32, b: bool) {
        self.tag(field, 0);
        self.varint(u64::from(b));
    }

    pub fn int64(&mut self, field: u32, v: i64) {
        if v != 0 {
            self.tag(field, 0);
            self.varint(v as u64);
        }
    }

    pub fn double(&mut self, field: u32, v: f64) {
        if v != 0.0 {
            self.tag(field, 1);
            self.buf.extend_from_slice(&v.to_le_bytes());
        }
    }

    /// A nested message, built by `f` (written even when empty, as a set message field is).
    pub fn message(&mut self, field: u32, f: impl FnOnce(&mut Writer)) {
        let mut inner = Writer::default();
        f(&mut inner);
        self.bytes(field, &inner.buf);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn encodes_the_wire_format() {
        let mut w = Writer::default();
        w.string(1, "testing");
        w.int64(2, 150);
        w.bool(3, true);
        w.bool(4, false);
        w.string(5, "");
        w.message(6, |m| m.int64(1, 1));
        assert_eq!(
            w.buf,
            [
                0x0a, 0x07, b't', b'e', b's', b't', b'i', b'n', b'g', 0x10, 0x96, 0x01, 0x18, 0x01,
                0x32, 0x02, 0x08, 0x01
            ]
        );
    }
}
