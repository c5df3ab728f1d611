//! Byte-level helpers shared by the on-disk formats: LEB128 varints and fixed-width
//! little-endian integers, decoded without ever panicking on short or bad input.

/// Appends `v` as a LEB128 varint (1 to 10 bytes).
pub fn put_varint(out: &mut Vec<u8>, mut v: u64) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// Decodes a varint at the start of `bytes`; returns it and the bytes it used.
pub fn get_varint(bytes: &[u8]) -> Option<(u64, usize)> {
    if let Some(&b) = bytes.first() {
        if b < 0x80 {
            return Some((u64::from(b), 1));
        }
    }
    let mut value = 0u64;
    for (i, &b) in bytes.iter().enumerate().take(10) {
        let part = u64::from(b & 0x7f);
        if i == 9 && part > 1 {
            return None;
        }
        value |= part << (7 * i);
        if b < 0x80 {
            return Some((value, i + 1));
        }
    }
    None
}

pub fn get_u32_le(bytes: &[u8], at: usize) -> Option<u32> {
    let b = bytes.get(at..at.checked_add(4)?)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

pub fn get_u64_le(bytes: &[u8], at: usize) -> Option<u64> {
    let b = bytes.get(at..at.checked_add(8)?)?;
    let mut a = [0u8; 8];
    a.copy_from_slice(b);
    Some(u64::from_le_bytes(a))
}

/// A cursor over bytes whose reads fail (return `None`) instead of panicking.
pub struct Reader<'a> {
    bytes: &'a [u8],
}

impl<'a> Reader<'a> {
    pub fn new(bytes: &'a [u8]) -> Self {
        Reader { bytes }
    }

    pub fn is_empty(&self) -> bool {
        self.bytes.is_empty()
    }

    pub fn remaining(&self) -> usize {
        self.bytes.len()
    }

    pub fn varint(&mut self) -> Option<u64> {
        let (v, n) = get_varint(self.bytes)?;
        self.bytes = &self.bytes[n..];
        Some(v)
    }

    pub fn varint_usize(&mut self) -> Option<usize> {
        usize::try_from(self.varint()?).ok()
    }

    pub fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.bytes.len() {
            return None;
        }
        let (head, tail) = self.bytes.split_at(n);
        self.bytes = tail;
        Some(head)
    }

    pub fn u8(&mut self) -> Option<u8> {
        Some(self.take(1)?[0])
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #[test]
        fn varints_round_trip(v in any::<u64>()) {
            let mut out = Vec::new();
            put_varint(&mut out, v);
            prop_assert_eq!(get_varint(&out), Some((v, out.len())));
            prop_assert_eq!(get_varint(&out[..out.len() - 1]), None);
        }

        #[test]
        fn decoding_garbage_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..20)) {
            let mut r = Reader::new(&bytes);
            while r.varint().is_some() {}
            let _ = get_u32_le(&bytes, usize::MAX - 1);
        }
    }

    #[test]
    fn an_overlong_varint_is_rejected() {
        assert_eq!(get_varint(&[0xff; 11]), None);
        assert_eq!(
            get_varint(&[0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0xff, 0x02]),
            None
        );
    }
}
