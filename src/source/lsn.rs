//! Log sequence numbers in PostgreSQL's `X/XXXXXXXX` text form.

/// `0x16B3748` → `0/16B3748`.
pub fn format(lsn: u64) -> String {
    format!("{:X}/{:X}", lsn >> 32, lsn & 0xFFFF_FFFF)
}

/// `0/16B3748` → `0x16B3748`.
pub fn parse(text: &str) -> Option<u64> {
    let (hi, lo) = text.trim().split_once('/')?;
    Some((u64::from_str_radix(hi, 16).ok()? << 32) | u64::from_str_radix(lo, 16).ok()?)
}

#[cfg(test)]
mod tests {
    #[test]
    fn lsn_text_round_trips() {
        for lsn in [0, 0x16B3748, 0x1_0000_0000, u64::MAX] {
            assert_eq!(super::parse(&super::format(lsn)), Some(lsn));
        }
        assert_eq!(super::format(0x16B3748), "0/16B3748");
        assert_eq!(super::parse("1/A"), Some((1 << 32) | 10));
        assert_eq!(super::parse("bogus"), None);
    }
}
