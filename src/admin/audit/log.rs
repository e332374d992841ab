//! The audit entries the admin API answers from: the newest [`MAX_ENTRIES_PER_TENANT`] of each
//! tenant, in the order of the audit topic. It has one partition, so its offsets are one total
//! order of every instance's changes, the same for every reader and after a restart; an entry the
//! API wrote itself is placed by the offset its write was given. Pages go newest first, with an
//! opaque cursor.
use std::collections::{HashMap, VecDeque};

use super::checked;
use crate::domain::time::Timestamp;
use crate::wire::convert;
use crate::wire::{pb, WireError};

/// Entries kept in memory per tenant. Older ones are still on the audit topic (for its
/// retention), but the API no longer lists them.
pub const MAX_ENTRIES_PER_TENANT: usize = 10_000;
/// The version of the cursor's layout, so that a later layout can tell an old cursor apart.
const CURSOR_LAYOUT: &str = "1";

/// The last entry of a page (its offset on the audit topic): the next page starts with the entry
/// before it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Cursor(i64);

impl Cursor {
    /// The cursor as clients see it: hex, one opaque token in a URL that clients do not take apart.
    pub fn encode(&self) -> String {
        let text = format!("{CURSOR_LAYOUT}.{}", self.0);
        text.bytes().map(|b| format!("{b:02x}")).collect()
    }

    /// A cursor given back by a client; `None` for anything `encode` did not make.
    pub fn decode(token: &str) -> Option<Cursor> {
        let longest = 2 * (CURSOR_LAYOUT.len() + 1 + 19);
        if token.len() % 2 != 0 || token.len() > longest {
            return None;
        }
        let bytes = (0..token.len())
            .step_by(2)
            .map(|i| u8::from_str_radix(token.get(i..i + 2)?, 16).ok())
            .collect::<Option<Vec<u8>>>()?;
        let text = String::from_utf8(bytes).ok()?;
        let offset = text.strip_prefix(CURSOR_LAYOUT)?.strip_prefix('.')?;
        let number: i64 = offset.parse().ok()?;
        (number >= 0 && number.to_string() == offset).then_some(Cursor(number))
    }
}

/// What to list of a tenant's log.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct AuditQuery {
    /// Entries on the page, at most.
    pub limit: usize,
    /// Only entries older than this (the previous page's `next`).
    pub after: Option<Cursor>,
    /// Only entries about this policy.
    pub policy_id: Option<String>,
    /// Only entries made at or after this time.
    pub since: Option<Timestamp>,
}

impl AuditQuery {
    /// Whether an entry passes the filters. Entries are in topic order, which the times they were
    /// made follow only roughly (each instance's clock), so `since` is a filter, not a stop.
    fn matches(&self, entry: &pb::AuditEntry) -> bool {
        let made_at = convert::timestamp("madeAt", entry.made_at).unwrap_or(Timestamp::MIN);
        self.policy_id
            .as_ref()
            .is_none_or(|p| *p == entry.policy_id)
            && self.since.is_none_or(|since| made_at >= since)
    }
}

/// One page, newest first; `next` is set when more entries match.
#[derive(Debug)]
pub struct AuditPage<'a> {
    pub entries: Vec<&'a pb::AuditEntry>,
    pub next: Option<Cursor>,
}

struct Kept {
    offset: i64,
    entry: pb::AuditEntry,
}

/// The newest entries of every tenant.
pub struct AuditLog {
    tenants: HashMap<String, VecDeque<Kept>>,
    bound: usize,
}

impl std::fmt::Debug for AuditLog {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AuditLog")
            .field("tenants", &self.tenants.len())
            .field("bound", &self.bound)
            .finish()
    }
}

impl Default for AuditLog {
    fn default() -> Self {
        AuditLog::with_bound(MAX_ENTRIES_PER_TENANT)
    }
}

impl AuditLog {
    /// A log that keeps at most `bound` entries per tenant.
    pub fn with_bound(bound: usize) -> Self {
        AuditLog {
            tenants: HashMap::new(),
            bound: bound.max(1),
        }
    }

    /// Keeps an entry at its `offset` on the audit topic. The same entry again (the API's own
    /// write, then read back from the topic) is kept once; beyond the bound the tenant's oldest
    /// entries go.
    pub fn record(&mut self, entry: pb::AuditEntry, offset: i64) -> Result<(), WireError> {
        let entry = checked(entry)?;
        let kept = self.tenants.entry(entry.tenant_id.clone()).or_default();
        if let Err(at) = kept.binary_search_by_key(&offset, |k| k.offset) {
            kept.insert(at, Kept { offset, entry });
            while kept.len() > self.bound {
                kept.pop_front();
            }
        }
        Ok(())
    }

    /// Entries kept of a tenant.
    pub fn len(&self, tenant: &str) -> usize {
        self.tenants.get(tenant).map_or(0, VecDeque::len)
    }

    /// A page of the tenant's entries that match `query`, newest first.
    pub fn page(&self, tenant: &str, query: &AuditQuery) -> AuditPage<'_> {
        let mut page = AuditPage {
            entries: Vec::new(),
            next: None,
        };
        let Some(kept) = self.tenants.get(tenant) else {
            return page;
        };
        let end = match query.after {
            Some(Cursor(after)) => kept.partition_point(|k| k.offset < after),
            None => kept.len(),
        };
        let mut last = None;
        for k in kept.range(..end).rev().filter(|k| query.matches(&k.entry)) {
            if page.entries.len() == query.limit {
                page.next = last.map(Cursor);
                break;
            }
            page.entries.push(&k.entry);
            last = Some(k.offset);
        }
        page
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::wire::convert::to_wire_timestamp;

    fn entry(id: &str, policy: &str, made_at: i64) -> pb::AuditEntry {
        pb::AuditEntry {
            entry_id: id.into(),
            tenant_id: "contoso".into(),
            policy_id: policy.into(),
            made_at: Some(to_wire_timestamp(Timestamp::from_millis(made_at))),
            ..Default::default()
        }
    }

    fn ids(page: &AuditPage<'_>) -> Vec<String> {
        page.entries.iter().map(|e| e.entry_id.clone()).collect()
    }

    fn query(limit: usize) -> AuditQuery {
        AuditQuery {
            limit,
            after: None,
            policy_id: None,
            since: None,
        }
    }

    fn after(page: &AuditPage<'_>, q: AuditQuery) -> AuditQuery {
        AuditQuery {
            after: page.next,
            ..q
        }
    }

    #[test]
    fn pages_go_newest_first_in_topic_order_and_end_where_the_entries_do() {
        let mut log = AuditLog::default();
        // Arrival order is not the order: the topic's is (an instance's own entry comes before the
        // feed has read an older one of another instance). Clocks do not decide it either.
        for (id, offset, made_at) in [
            ("c", 2, 30),
            ("a", 0, 10),
            ("e", 4, 40),
            ("b", 1, 20),
            ("d", 3, 50),
        ] {
            log.record(entry(id, "p", made_at), offset).unwrap();
        }
        let first = log.page("contoso", &query(2));
        assert_eq!(ids(&first), ["e", "d"]);
        let second = log.page("contoso", &after(&first, query(2)));
        assert_eq!(ids(&second), ["c", "b"]);
        let third = log.page("contoso", &after(&second, query(2)));
        assert_eq!(ids(&third), ["a"]);
        assert!(third.next.is_none(), "the last page has no next");
        let exact = log.page("contoso", &query(5));
        assert!(exact.next.is_none(), "no next when nothing more matches");
        assert!(log.page("fabrikam", &query(5)).entries.is_empty());
    }

    #[test]
    fn filters_by_policy_and_time_and_pages_over_the_filtered_entries() {
        let mut log = AuditLog::default();
        for (id, policy, at) in [
            ("s1", "", 1),
            ("a1", "p-a", 2),
            ("b1", "p-b", 3),
            ("a2", "p-a", 4),
            ("a3", "p-a", 5),
        ] {
            log.record(entry(id, policy, at), at).unwrap();
        }
        let only_a = AuditQuery {
            policy_id: Some("p-a".into()),
            ..query(2)
        };
        let first = log.page("contoso", &only_a);
        assert_eq!(ids(&first), ["a3", "a2"]);
        let rest = log.page("contoso", &after(&first, only_a.clone()));
        assert_eq!(ids(&rest), ["a1"]);
        assert!(rest.next.is_none());
        let recent = AuditQuery {
            since: Some(Timestamp::from_millis(3)),
            ..query(10)
        };
        assert_eq!(ids(&log.page("contoso", &recent)), ["a3", "a2", "b1"]);
    }

    #[test]
    fn an_entry_seen_twice_is_kept_once_and_the_bound_drops_the_oldest() {
        let mut log = AuditLog::with_bound(3);
        log.record(entry("a", "p", 1), 7).unwrap();
        log.record(entry("a", "p", 1), 7).unwrap();
        assert_eq!(log.len("contoso"), 1);
        for (id, offset) in [("b", 8), ("c", 9), ("d", 10)] {
            log.record(entry(id, "p", 1), offset).unwrap();
        }
        assert_eq!(ids(&log.page("contoso", &query(10))), ["d", "c", "b"]);
        assert!(log.record(entry("", "p", 5), 11).is_err());
    }

    #[test]
    fn a_cursor_reads_back_as_itself_and_nothing_else_reads_as_a_cursor() {
        for offset in [0, 1, 1_772_447_460_123, i64::MAX] {
            let token = Cursor(offset).encode();
            assert!(token.bytes().all(|b| b.is_ascii_hexdigit()), "{token}");
            assert_eq!(Cursor::decode(&token), Some(Cursor(offset)));
        }
        let hex = |s: &str| s.bytes().map(|b| format!("{b:02x}")).collect::<String>();
        for forged in [
            String::new(),
            "zz".into(),
            "abc".into(),
            hex("1."),
            hex("1.-5"),
            hex("1.+12"),
            hex("1.012"),
            hex("1.12 "),
            hex("2.12"),
            hex("1.99999999999999999999"),
            format!("{}00", Cursor(5).encode()),
        ] {
            assert_eq!(Cursor::decode(&forged), None, "{forged}");
        }
    }
}
