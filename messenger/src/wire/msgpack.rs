//! The few MessagePack types the envelope and the protocol's own bodies use (arrays, unsigned
//! integers, booleans, nil, binary strings), written and read by hand: they run for every
//! frame, and going through serde or `io::Write` per field cost twice as many instructions.
//! Payloads (the user's types) use rmp-serde.

use bytes::{BufMut, BytesMut};

/// Takes `N` bytes off the front of `rd`.
pub(super) fn take<const N: usize>(rd: &mut &[u8]) -> Option<[u8; N]> {
    let (bytes, rest) = rd.split_first_chunk::<N>()?;
    *rd = rest;
    Some(*bytes)
}

/// A MessagePack array's length, in any of its encodings.
pub(super) fn read_array_len(rd: &mut &[u8]) -> Option<u32> {
    let [marker] = take::<1>(rd)?;
    Some(match marker {
        0x90..=0x9f => (marker & 0x0f).into(),
        0xdc => u16::from_be_bytes(take(rd)?).into(),
        0xdd => u32::from_be_bytes(take(rd)?),
        _ => return None,
    })
}

/// A MessagePack unsigned integer of any width (the mirror of [`write_uint`]).
pub(super) fn read_uint(rd: &mut &[u8]) -> Option<u64> {
    let [marker] = take::<1>(rd)?;
    Some(match marker {
        0x00..=0x7f => marker.into(),
        0xcc => u8::from_be_bytes(take(rd)?).into(),
        0xcd => u16::from_be_bytes(take(rd)?).into(),
        0xce => u32::from_be_bytes(take(rd)?).into(),
        0xcf => u64::from_be_bytes(take(rd)?),
        _ => return None,
    })
}

/// A MessagePack boolean.
pub(super) fn read_bool(rd: &mut &[u8]) -> Option<bool> {
    match take::<1>(rd)? {
        [0xc3] => Some(true),
        [0xc2] => Some(false),
        _ => None,
    }
}

/// A binary string's bytes, borrowed from `rd`.
pub(super) fn read_bin<'a>(rd: &mut &'a [u8]) -> Result<&'a [u8], &'static str> {
    let [marker] = take::<1>(rd).ok_or("missing")?;
    let len = match marker {
        0xc4 => take::<1>(rd).map(|b| u8::from_be_bytes(b) as usize),
        0xc5 => take::<2>(rd).map(|b| u16::from_be_bytes(b) as usize),
        0xc6 => take::<4>(rd).map(|b| u32::from_be_bytes(b) as usize),
        _ => return Err("not a binary string"),
    };
    let len = len.ok_or("cut short")?;
    if rd.len() < len {
        return Err("cut short");
    }
    let (bin, rest) = rd.split_at(len);
    *rd = rest;
    Ok(bin)
}

/// A MessagePack unsigned integer in its shortest form.
pub(super) fn write_uint(dst: &mut BytesMut, value: u64) {
    match value {
        0..=0x7f => dst.put_u8(value as u8),
        0x80..=0xff => {
            dst.put_u8(0xcc);
            dst.put_u8(value as u8);
        }
        0x100..=0xffff => {
            dst.put_u8(0xcd);
            dst.put_u16(value as u16);
        }
        0x1_0000..=0xffff_ffff => {
            dst.put_u8(0xce);
            dst.put_u32(value as u32);
        }
        _ => {
            dst.put_u8(0xcf);
            dst.put_u64(value);
        }
    }
}

/// A MessagePack array's length, in its shortest form.
pub(super) fn write_array_len(dst: &mut BytesMut, len: usize) {
    match len {
        0..=15 => dst.put_u8(0x90 | len as u8),
        16..=0xffff => {
            dst.put_u8(0xdc);
            dst.put_u16(len as u16);
        }
        _ => {
            dst.put_u8(0xdd);
            dst.put_u32(len as u32);
        }
    }
}

/// A MessagePack boolean.
pub(super) fn write_bool(dst: &mut BytesMut, value: bool) {
    dst.put_u8(if value { 0xc3 } else { 0xc2 });
}

/// A MessagePack binary string.
pub(super) fn write_bin(dst: &mut BytesMut, bin: &[u8]) {
    match bin.len() {
        len @ 0..=0xff => {
            dst.put_u8(0xc4);
            dst.put_u8(len as u8);
        }
        len @ 0x100..=0xffff => {
            dst.put_u8(0xc5);
            dst.put_u16(len as u16);
        }
        len => {
            dst.put_u8(0xc6);
            dst.put_u32(len as u32);
        }
    }
    dst.put_slice(bin);
}
