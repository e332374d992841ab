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
struct Guid([u64; 2]);

impl Guid {
    fn parse(id: &str) -> Option<Guid> {
        let bytes = id.as_bytes();
        if bytes.len() != 36 {
            return None;
        }
        let mut value: u128 = 0;
        for (i, &b) in bytes.iter().enumerate() {
            if matches!(i, 8 | 13 | 18 | 23) {
                if b != b'-' {
                    return None;
                }
                continue;
            }
            let digit = match b {
                b'0'..=b'9' => b - b'0',
                b'a'..=b'f' => b - b'a' + 10,
                _ => return None,
            };
            value = value << 4 | u128::from(digit);
        }
        Some(Guid([(value >> 64) as u64, value as u64]))
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
        match Guid::parse(id) {
            Some(guid) => self.guids.get(&guid),
            None => self.others.get(id),
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
