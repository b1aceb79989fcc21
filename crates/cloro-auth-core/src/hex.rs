//! Lower-case hexadecimal, the only alphabet a key's random part and checksum use.

/// The digits in the order their values count.
const DIGITS: &[u8; 16] = b"0123456789abcdef";

/// Writes `bytes` as lower-case hex into `out`, which must be twice as long.
pub(crate) fn encode_into(bytes: &[u8], out: &mut [u8]) {
    for (pair, byte) in out.chunks_exact_mut(2).zip(bytes) {
        pair[0] = DIGITS[usize::from(byte >> 4)];
        pair[1] = DIGITS[usize::from(byte & 0x0f)];
    }
}

/// The value of one lower-case hex digit; upper case is not a digit here,
/// because SPEC §2 makes `A-F` a format error.
pub(crate) const fn digit_value(c: u8) -> Option<u8> {
    match VALUE[c as usize] {
        NOT_A_DIGIT => None,
        value => Some(value),
    }
}

const NOT_A_DIGIT: u8 = 0xff;

/// Digit values by byte; a table because key checks run on every request.
const VALUE: [u8; 256] = {
    let mut table = [NOT_A_DIGIT; 256];
    let mut c = 0;
    while c < 10 {
        table[b'0' as usize + c] = c as u8;
        c += 1;
    }
    let mut c = 0;
    while c < 6 {
        table[b'a' as usize + c] = 10 + c as u8;
        c += 1;
    }
    table
};

/// Reads exactly 8 lower-case hex digits as a big-endian `u32`.
pub(crate) fn decode_u32(digits: &[u8]) -> Option<u32> {
    if digits.len() != 8 {
        return None;
    }
    digits.iter().try_fold(0u32, |acc, &c| {
        Some((acc << 4) | u32::from(digit_value(c)?))
    })
}
