//! Opaque page cursors: the offset, with a check so a cursor cannot be edited or replayed for
//! another user without being noticed. They survive a model reload (they hold no version).
//!
//! An offset is enough because the arrangement is prefix-stable: arranging deeper extends the
//! sequence without changing earlier positions, so while the model, the viewer's signals and
//! the request's weights stay the same, followed cursors never repeat or skip a post.

pub fn encode(offset: usize, user_id: &str) -> String {
    let offset = offset as u32;
    format!("{offset:08x}{:08x}", check(offset, user_id))
}

pub fn decode(cursor: &str, user_id: &str) -> Option<usize> {
    if cursor.len() != 16 || !cursor.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let offset = u32::from_str_radix(&cursor[..8], 16).ok()?;
    let sum = u32::from_str_radix(&cursor[8..], 16).ok()?;
    (sum == check(offset, user_id)).then_some(offset as usize)
}

/// FNV-1a over the user id and offset: a guard against mistakes, not a secret.
fn check(offset: u32, user_id: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for &b in user_id.as_bytes().iter().chain(offset.to_le_bytes().iter()) {
        h ^= u32::from(b);
        h = h.wrapping_mul(0x0100_0193);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trips_and_rejects_tampering() {
        let c = encode(40, "u_1");
        assert_eq!(decode(&c, "u_1"), Some(40));
        assert_eq!(decode(&c, "u_2"), None, "a cursor is bound to its user");
        let edited = format!("{:08x}{}", 41, &c[8..]);
        assert_eq!(decode(&edited, "u_1"), None);
        assert_eq!(decode("zz", "u_1"), None);
        assert_eq!(decode("", "u_1"), None);
    }
}
