//! Tenant and user ids. Entra ids are GUIDs, and a GUID names the same object in any letter case
//! (`6F9619FF-8B86-D011-B42D-00C04FC964FF` is `6f9619ff-8b86-d011-b42d-00c04fc964ff`), so a GUID id
//! is taken in its lowercase form everywhere: engine, routing, admin paths and tokens, report and
//! verify. Any other id is kept exactly as written.

use std::borrow::Cow;

/// The hyphen positions of `xxxxxxxx-xxxx-xxxx-xxxx-xxxxxxxxxxxx`.
const HYPHENS: [usize; 4] = [8, 13, 18, 23];

/// Whether `id` is a hyphenated GUID, in any letter case.
pub fn is_guid(id: &str) -> bool {
    let bytes = id.as_bytes();
    bytes.len() == 36
        && bytes.iter().enumerate().all(|(at, b)| {
            if HYPHENS.contains(&at) {
                *b == b'-'
            } else {
                b.is_ascii_hexdigit()
            }
        })
}

/// `id` in its canonical form: a GUID in lowercase, anything else unchanged. Allocates only for a
/// GUID that has uppercase letters.
pub fn canonical(id: String) -> String {
    match canonical_str(&id) {
        Cow::Borrowed(_) => id,
        Cow::Owned(lower) => lower,
    }
}

/// [`canonical`] of a borrowed id.
pub fn canonical_str(id: &str) -> Cow<'_, str> {
    if id.bytes().any(|b| b.is_ascii_uppercase()) && is_guid(id) {
        Cow::Owned(id.to_ascii_lowercase())
    } else {
        Cow::Borrowed(id)
    }
}

/// Whether two ids name the same tenant or user.
pub fn same(a: &str, b: &str) -> bool {
    a == b || (is_guid(a) && a.eq_ignore_ascii_case(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    #[test]
    fn a_guid_in_any_case_is_one_id() {
        let upper = "6F9619FF-8B86-D011-B42D-00C04FC964FF";
        let lower = "6f9619ff-8b86-d011-b42d-00c04fc964ff";
        assert_eq!(canonical(upper.to_owned()), lower);
        assert_eq!(
            canonical("6f9619FF-8b86-D011-b42d-00c04fc964ff".into()),
            lower
        );
        assert_eq!(canonical_str(upper), lower);
        assert!(same(upper, lower));
    }

    #[test]
    fn other_ids_stay_exact() {
        for id in [
            "Contoso",
            "CONTOSO",
            "6F9619FF-8B86-D011-B42D-00C04FC964F",
            "{6F9619FF-8B86-D011-B42D-00C04FC964FF}",
            "6F9619FF_8B86-D011-B42D-00C04FC964FF",
            "6F9619FG-8B86-D011-B42D-00C04FC964FF",
        ] {
            assert_eq!(canonical(id.to_owned()), id, "{id}");
        }
        assert!(!same("Contoso", "contoso"));
        assert!(same("Contoso", "Contoso"));
    }

    proptest! {
        #[test]
        fn canonical_is_idempotent_and_agrees_with_same(id in "[0-9a-fA-F-]{30,40}|[ -~]{0,40}") {
            let once = canonical(id.clone());
            prop_assert_eq!(canonical(once.clone()), once.clone());
            prop_assert!(same(&id, &once));
            prop_assert_eq!(canonical_str(&id).into_owned(), once);
        }
    }
}
