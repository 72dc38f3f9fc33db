//! Just enough DER to take a certificate apart and put it back together: split a
//! SEQUENCE into its elements, and re-encode a TLV with the right length. Used where the
//! bytes must stay exactly as they were (a CSR's subject copied verbatim into a
//! certificate) or where a structure must be re-signed after an edit.

/// One DER element (tag, length, value) inside a larger buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Tlv<'a> {
    /// The identifier octet (only single-octet tags occur in the structures handled here).
    pub tag: u8,
    /// The contents, without tag and length.
    pub value: &'a [u8],
    /// The whole element: tag, length and contents.
    pub raw: &'a [u8],
}

/// Reads one element from the front of `input`; returns it and the rest.
pub(crate) fn read(input: &[u8]) -> Option<(Tlv<'_>, &[u8])> {
    let tag = *input.first()?;
    if tag & 0x1f == 0x1f {
        return None; // multi-octet tag: not used in the structures handled here
    }
    let first = *input.get(1)?;
    let (len, header) = if first < 0x80 {
        (usize::from(first), 2)
    } else {
        let n = usize::from(first & 0x7f);
        if n == 0 || n > 4 {
            return None; // indefinite length (BER) or absurdly long
        }
        let bytes = input.get(2..2 + n)?;
        if bytes[0] == 0 {
            return None; // not minimal: not DER
        }
        let len = bytes
            .iter()
            .fold(0usize, |acc, b| (acc << 8) | usize::from(*b));
        if len < 0x80 {
            return None; // should have used the short form
        }
        (len, 2 + n)
    };
    let end = header.checked_add(len)?;
    let raw = input.get(..end)?;
    Some((
        Tlv {
            tag,
            value: &raw[header..],
            raw,
        },
        &input[end..],
    ))
}

/// Reads exactly one element: `input` must hold nothing after it.
pub(crate) fn read_one(input: &[u8]) -> Option<Tlv<'_>> {
    match read(input)? {
        (t, []) => Some(t),
        _ => None,
    }
}

/// The elements of a constructed value (a SEQUENCE's or SET's contents), in order.
pub(crate) fn elements(mut value: &[u8]) -> Option<Vec<Tlv<'_>>> {
    let mut out = Vec::new();
    while !value.is_empty() {
        let (t, rest) = read(value)?;
        out.push(t);
        value = rest;
    }
    Some(out)
}

/// Encodes a length in DER.
fn push_len(out: &mut Vec<u8>, len: usize) {
    if len < 0x80 {
        out.push(len as u8);
    } else {
        let bytes = len.to_be_bytes();
        let skip = bytes.iter().take_while(|b| **b == 0).count();
        out.push(0x80 | (bytes.len() - skip) as u8);
        out.extend_from_slice(&bytes[skip..]);
    }
}

/// Encodes one element from its tag and the concatenation of `parts`.
pub(crate) fn encode(tag: u8, parts: &[&[u8]]) -> Vec<u8> {
    let len: usize = parts.iter().map(|p| p.len()).sum();
    let mut out = Vec::with_capacity(len + 6);
    out.push(tag);
    push_len(&mut out, len);
    for p in parts {
        out.extend_from_slice(p);
    }
    out
}

pub(crate) const SEQUENCE: u8 = 0x30;
pub(crate) const INTEGER: u8 = 0x02;
pub(crate) const BIT_STRING: u8 = 0x03;
pub(crate) const OCTET_STRING: u8 = 0x04;
pub(crate) const OID: u8 = 0x06;

/// The parts of a signed X.509 structure (certificate or CRL):
/// `SEQUENCE { tbs, signatureAlgorithm, signatureValue }`.
pub(crate) struct Signed<'a> {
    pub tbs: Tlv<'a>,
    pub algorithm: Tlv<'a>,
}

/// Splits a signed structure into its to-be-signed part and its signature algorithm.
pub(crate) fn split_signed(der: &[u8]) -> Option<Signed<'_>> {
    let outer = read_one(der)?;
    if outer.tag != SEQUENCE {
        return None;
    }
    let parts = elements(outer.value)?;
    match parts.as_slice() {
        [tbs, alg, sig] if tbs.tag == SEQUENCE && alg.tag == SEQUENCE && sig.tag == BIT_STRING => {
            Some(Signed {
                tbs: *tbs,
                algorithm: *alg,
            })
        }
        _ => None,
    }
}

/// Builds a signed structure from a to-be-signed DER, the signature algorithm's DER and
/// the signature bytes.
pub(crate) fn assemble_signed(tbs: &[u8], algorithm: &[u8], signature: &[u8]) -> Vec<u8> {
    let bits = encode(BIT_STRING, &[&[0u8], signature]);
    encode(SEQUENCE, &[tbs, algorithm, &bits])
}

/// The magnitude of a DER INTEGER's contents in bits (sign byte and leading zeros removed).
pub(crate) fn integer_bits(value: &[u8]) -> usize {
    let v: &[u8] = {
        let skip = value.iter().take_while(|b| **b == 0).count();
        &value[skip..]
    };
    match v.first() {
        None => 0,
        Some(b) => (v.len() - 1) * 8 + (8 - b.leading_zeros() as usize),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lengths_round_trip() {
        for len in [0usize, 1, 127, 128, 255, 256, 65535, 65536, 1 << 20] {
            let body = vec![0x55u8; len];
            let enc = encode(OCTET_STRING, &[&body]);
            let t = read_one(&enc).expect("reads back");
            assert_eq!(
                (t.tag, t.value.len(), t.raw.len()),
                (OCTET_STRING, len, enc.len())
            );
        }
    }

    #[test]
    fn refuses_non_der_lengths_and_truncation() {
        assert!(
            read(&[0x30, 0x81, 0x05, 1, 2, 3, 4, 5]).is_none(),
            "long form for a short length"
        );
        assert!(read(&[0x30, 0x80]).is_none(), "indefinite length");
        assert!(read(&[0x30, 0x03, 1, 2]).is_none(), "truncated");
        assert!(
            read_one(&[0x05, 0x00, 0x05, 0x00]).is_none(),
            "trailing data"
        );
    }

    #[test]
    fn integer_bits_ignore_the_sign_byte() {
        assert_eq!(integer_bits(&[0x00, 0x80]), 8);
        assert_eq!(integer_bits(&[0x01]), 1);
        assert_eq!(integer_bits(&[0x7f, 0xff]), 15);
        assert_eq!(integer_bits(&[]), 0);
    }
}
