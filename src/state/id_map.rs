//! A map keyed by tenant or user id. Ids are almost always GUIDs as Entra writes them (lowercase,
//! hyphenated); those are packed into 16 bytes held inline in the table, so a lookup hashes and
//! compares two words instead of chasing a pointer to a heap key (a cache miss per lookup in a large
//! state), and an entry needs no key allocation. Any other id is kept as text in a second table, so
//! every id still works and two different strings are never taken for the same key.

use hashbrown::hash_map::EntryRef;
use hashbrown::HashMap;

type Hasher = hashbrown::DefaultHashBuilder;

/// A canonical GUID's 128 bits. Only the lowercase hyphenated form is parsed, so the mapping
/// between such strings and values is one to one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Guid([u64; 2]);

/// Value of each lowercase hex digit; `INVALID` for every other byte.
const HEX_VALUE: [u8; 256] = {
    let mut table = [INVALID; 256];
    let mut i = 0;
    while i < 10 {
        table[b'0' as usize + i] = i as u8;
        i += 1;
    }
    let mut i = 0;
    while i < 6 {
        table[b'a' as usize + i] = 10 + i as u8;
        i += 1;
    }
    table
};
const INVALID: u8 = 0x80;
/// Where the hex digits of `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx` are: the first 16, then the last.
const HIGH_DIGITS: [usize; 16] = [0, 1, 2, 3, 4, 5, 6, 7, 9, 10, 11, 12, 14, 15, 16, 17];
const LOW_DIGITS: [usize; 16] = [
    19, 20, 21, 22, 24, 25, 26, 27, 28, 29, 30, 31, 32, 33, 34, 35,
];

impl Guid {
    /// Without a branch per character: every lookup pays this, so it must cost less than the cache
    /// miss it saves.
    fn parse(id: &str) -> Option<Guid> {
        let bytes: &[u8; 36] = id.as_bytes().try_into().ok()?;
        if bytes[8] != b'-' || bytes[13] != b'-' || bytes[18] != b'-' || bytes[23] != b'-' {
            return None;
        }
        let mut invalid = 0;
        let mut half = |positions: &[usize; 16]| {
            positions.iter().fold(0u64, |value, &at| {
                let digit = HEX_VALUE[usize::from(bytes[at])];
                invalid |= digit;
                value << 4 | u64::from(digit & 0xf)
            })
        };
        let halves = [half(&HIGH_DIGITS), half(&LOW_DIGITS)];
        (invalid & INVALID == 0).then_some(Guid(halves))
    }
}

/// An id with its GUID parsed once, to look it up in several maps.
#[derive(Clone, Copy)]
pub enum IdKey<'a> {
    Guid(Guid),
    Text(&'a str),
}

impl<'a> IdKey<'a> {
    pub fn of(id: &'a str) -> Self {
        Guid::parse(id).map_or(IdKey::Text(id), IdKey::Guid)
    }
}

#[derive(Debug)]
pub struct IdMap<V> {
    guids: HashMap<Guid, V, Hasher>,
    others: HashMap<Box<str>, V, Hasher>,
}

impl<V> Default for IdMap<V> {
    fn default() -> Self {
        IdMap {
            guids: HashMap::with_hasher(Hasher::default()),
            others: HashMap::with_hasher(Hasher::default()),
        }
    }
}

impl<V> IdMap<V> {
    pub fn get(&self, id: &str) -> Option<&V> {
        self.get_by_key(IdKey::of(id))
    }

    pub fn get_by_key(&self, key: IdKey<'_>) -> Option<&V> {
        match key {
            IdKey::Guid(guid) => self.guids.get(&guid),
            IdKey::Text(id) => self.others.get(id),
        }
    }

    pub fn get_mut(&mut self, id: &str) -> Option<&mut V> {
        match Guid::parse(id) {
            Some(guid) => self.guids.get_mut(&guid),
            None => self.others.get_mut(id),
        }
    }

    /// The entry for `id`, created with `V::default()` if absent (one probe either way).
    pub fn get_or_default(&mut self, id: &str) -> &mut V
    where
        V: Default,
    {
        match Guid::parse(id) {
            Some(guid) => self.guids.entry(guid).or_default(),
            None => match self.others.entry_ref(id) {
                EntryRef::Occupied(e) => e.into_mut(),
                EntryRef::Vacant(e) => e.insert(V::default()),
            },
        }
    }

    pub fn remove(&mut self, id: &str) -> Option<V> {
        match Guid::parse(id) {
            Some(guid) => self.guids.remove(&guid),
            None => self.others.remove(id),
        }
    }

    pub fn len(&self) -> usize {
        self.guids.len() + self.others.len()
    }

    pub fn values(&self) -> impl Iterator<Item = &V> {
        self.guids.values().chain(self.others.values())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GUID: &str = "3f2504e0-4f89-41d3-9a0c-0305e82c3301";

    #[test]
    fn only_canonical_lowercase_guids_are_packed() {
        assert_eq!(
            Guid::parse(GUID),
            Some(Guid([0x3f25_04e0_4f89_41d3, 0x9a0c_0305_e82c_3301]))
        );
        for other in [
            "3F2504E0-4F89-41D3-9A0C-0305E82C3301",
            "{3f2504e0-4f89-41d3-9a0c-0305e82c3301}",
            "3f2504e04f8941d39a0c0305e82c3301",
            "3f2504e0-4f89-41d3-9a0c-0305e82c330g",
            "3f2504e0_4f89-41d3-9a0c-0305e82c3301",
            "u1",
            "",
        ] {
            assert_eq!(Guid::parse(other), None, "{other}");
        }
    }

    #[test]
    fn any_id_is_a_key_and_different_strings_are_different_keys() {
        let mut map = IdMap::<u32>::default();
        *map.get_or_default(GUID) += 1;
        *map.get_or_default(&GUID.to_uppercase()) += 10;
        *map.get_or_default("u1") += 100;
        *map.get_or_default(GUID) += 1;
        assert_eq!(map.get(GUID), Some(&2));
        assert_eq!(map.get(&GUID.to_uppercase()), Some(&10));
        assert_eq!(map.get("u1"), Some(&100));
        assert_eq!(map.get("u2"), None);
        assert_eq!(map.len(), 3);
        assert_eq!(map.remove("u1"), Some(100));
        *map.get_mut(GUID).unwrap() = 7;
        assert_eq!(map.values().sum::<u32>(), 17);
    }
}
