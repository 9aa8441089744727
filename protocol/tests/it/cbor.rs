//! A test-only walker over CBOR heads, to build non-canonical variants of canonical encodings.

/// One item: where its head starts, how long the head is, its major type and argument, and where the item ends.
#[derive(Debug, Clone, Copy)]
pub struct Item {
    pub offset: usize,
    pub head_len: usize,
    pub major: u8,
    pub argument: u64,
    pub end: usize,
}

/// Every item of a canonical encoding, in order of their heads.
pub fn items(bytes: &[u8]) -> Vec<Item> {
    let mut out = Vec::new();
    let end = walk(bytes, 0, &mut out);
    assert_eq!(end, bytes.len());
    out
}

fn walk(bytes: &[u8], offset: usize, out: &mut Vec<Item>) -> usize {
    let initial = bytes[offset];
    let (major, info) = (initial >> 5, initial & 0x1f);
    let (argument, head_len) = match info {
        0..=23 => (u64::from(info), 1),
        24..=27 => {
            let width = 1usize << (info - 24);
            let value = bytes[offset + 1..offset + 1 + width].iter().fold(0u64, |acc, b| (acc << 8) | u64::from(*b));
            (value, 1 + width)
        }
        _ => panic!("not canonical kos CBOR"),
    };
    let index = out.len();
    out.push(Item { offset, head_len, major, argument, end: 0 });
    let mut cursor = offset + head_len;
    match major {
        0 => {}
        2 | 3 => cursor += argument as usize,
        4 => {
            for _ in 0..argument {
                cursor = walk(bytes, cursor, out);
            }
        }
        _ => panic!("unexpected major type {major}"),
    }
    out[index].end = cursor;
    cursor
}

/// The encoding with one head written one size wider than needed (e.g. `0x05` as `0x18 0x05`).
pub fn widen(bytes: &[u8], item: Item) -> Vec<u8> {
    let width = match item.head_len {
        1 => 1,
        2 => 2,
        3 => 4,
        5 => 8,
        _ => return bytes.to_vec(),
    };
    let info = match width {
        1 => 24,
        2 => 25,
        4 => 26,
        _ => 27,
    };
    let mut out = bytes[..item.offset].to_vec();
    out.push((item.major << 5) | info);
    out.extend_from_slice(&item.argument.to_be_bytes()[8 - width..]);
    out.extend_from_slice(&bytes[item.offset + item.head_len..]);
    out
}

/// The encoding with one definite-length array or string written with an indefinite length.
pub fn indefinite(bytes: &[u8], item: Item) -> Vec<u8> {
    let mut out = bytes[..item.offset].to_vec();
    match item.major {
        4 => {
            out.push(0x9f);
            out.extend_from_slice(&bytes[item.offset + item.head_len..item.end]);
            out.push(0xff);
        }
        2 | 3 => {
            // One chunk inside an indefinite-length string.
            out.push((item.major << 5) | 31);
            out.extend_from_slice(&bytes[item.offset..item.end]);
            out.push(0xff);
        }
        _ => out.extend_from_slice(&bytes[item.offset..item.end]),
    }
    out.extend_from_slice(&bytes[item.end..]);
    out
}
