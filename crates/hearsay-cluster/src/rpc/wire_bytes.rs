//! Fast serde for byte-string fields of RPC messages (keys, values).
//!
//! serde encodes a `Vec<u8>` as a sequence, one `u8` at a time; with postcard that is about
//! three times slower for a 4 KiB value than encoding it as bytes, yet the wire format is the
//! same (a varint length, then the raw bytes). So a field can switch to these functions
//! without a format change:
//!
//! ```ignore
//! #[derive(Serialize, Deserialize)]
//! struct WireCell {
//!     #[serde(with = "hearsay_cluster::rpc::wire_bytes")]
//!     key: Vec<u8>,
//!     #[serde(with = "hearsay_cluster::rpc::wire_bytes::option")]
//!     value: Option<Vec<u8>>,
//! }
//! ```
//!
//! Decoding is bounded by the input: postcard checks a declared length against the bytes
//! actually present before copying, so a lying length is an error, not an allocation.

use serde::de::{Deserializer, Error, Visitor};
use serde::ser::Serializer;
use std::fmt;

/// Serialises bytes as a byte string.
pub fn serialize<S: Serializer, T: AsRef<[u8]>>(bytes: &T, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_bytes(bytes.as_ref())
}

/// Deserialises a byte string (or, from self-describing formats, a sequence of bytes).
pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<u8>, D::Error> {
    d.deserialize_byte_buf(BytesVisitor)
}

struct BytesVisitor;

impl<'de> Visitor<'de> for BytesVisitor {
    type Value = Vec<u8>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a byte string")
    }
    fn visit_bytes<E: Error>(self, v: &[u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_borrowed_bytes<E: Error>(self, v: &'de [u8]) -> Result<Vec<u8>, E> {
        Ok(v.to_vec())
    }
    fn visit_byte_buf<E: Error>(self, v: Vec<u8>) -> Result<Vec<u8>, E> {
        Ok(v)
    }
    fn visit_seq<A: serde::de::SeqAccess<'de>>(self, mut seq: A) -> Result<Vec<u8>, A::Error> {
        // Same cap as serde's own `Vec` impl: never trust a size hint for more than 1 MiB.
        let mut v = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(1024 * 1024));
        while let Some(b) = seq.next_element::<u8>()? {
            v.push(b);
        }
        Ok(v)
    }
}

/// The same for `Option<Vec<u8>>` fields.
pub mod option {
    use super::BytesVisitor;
    use serde::de::{Deserializer, Visitor};
    use serde::ser::Serializer;
    use std::fmt;

    struct AsBytes<'a>(&'a [u8]);

    impl serde::Serialize for AsBytes<'_> {
        fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
            s.serialize_bytes(self.0)
        }
    }

    /// Serialises `None` or a byte string.
    pub fn serialize<S: Serializer, T: AsRef<[u8]>>(
        bytes: &Option<T>,
        s: S,
    ) -> Result<S::Ok, S::Error> {
        match bytes {
            Some(b) => s.serialize_some(&AsBytes(b.as_ref())),
            None => s.serialize_none(),
        }
    }

    /// Deserialises `None` or a byte string.
    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<Option<Vec<u8>>, D::Error> {
        d.deserialize_option(OptionVisitor)
    }

    struct OptionVisitor;

    impl<'de> Visitor<'de> for OptionVisitor {
        type Value = Option<Vec<u8>>;

        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
            f.write_str("an optional byte string")
        }
        fn visit_none<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_unit<E: serde::de::Error>(self) -> Result<Self::Value, E> {
            Ok(None)
        }
        fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
            d.deserialize_byte_buf(BytesVisitor).map(Some)
        }
    }
}

#[cfg(test)]
mod tests {
    use serde::{Deserialize, Serialize};

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Plain {
        key: Vec<u8>,
        value: Option<Vec<u8>>,
    }

    #[derive(Debug, PartialEq, Serialize, Deserialize)]
    struct Fast {
        #[serde(with = "super")]
        key: Vec<u8>,
        #[serde(with = "super::option")]
        value: Option<Vec<u8>>,
    }

    #[test]
    fn same_wire_format_as_plain_vec_both_ways() {
        for (key, value) in [
            (vec![], None),
            (b"k".to_vec(), Some(vec![])),
            ((0..=255).collect::<Vec<u8>>(), Some(vec![9; 4096])),
        ] {
            let plain = Plain {
                key: key.clone(),
                value: value.clone(),
            };
            let fast = Fast { key, value };
            let a = postcard::to_allocvec(&plain).unwrap();
            let b = postcard::to_allocvec(&fast).unwrap();
            assert_eq!(a, b);
            assert_eq!(postcard::from_bytes::<Fast>(&a).unwrap(), fast);
            assert_eq!(postcard::from_bytes::<Plain>(&b).unwrap(), plain);
        }
    }

    #[test]
    fn a_length_beyond_the_input_is_an_error() {
        // key declares 1000 bytes, 3 follow.
        let bytes = [0xe8, 0x07, 1, 2, 3];
        assert!(postcard::from_bytes::<Fast>(&bytes).is_err());
        // Truncated option tag.
        assert!(postcard::from_bytes::<Fast>(&[0]).is_err());
    }
}
