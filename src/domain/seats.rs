//! Seats: how many licences of a product a tenant can still assign.
//!
//! Available = purchased - assigned as of the inventory snapshot - this processor's assignments of the
//! product after that snapshot, never below zero.
use super::time::Timestamp;

/// A billing snapshot of one tenant's product.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Inventory {
    pub purchased_units: u64,
    pub assigned_units: u64,
    pub as_of: Timestamp,
}

/// The times of this processor's assignments of one tenant's product, sorted, so that the ones after
/// an inventory snapshot can be counted by binary search.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct SeatUsage {
    assigned_at: Vec<Timestamp>,
}

impl SeatUsage {
    pub fn record(&mut self, at: Timestamp) {
        let i = self.assigned_at.partition_point(|t| *t <= at);
        self.assigned_at.insert(i, at);
    }

    /// Assignments made after `as_of`, which a snapshot taken then cannot include.
    pub fn after(&self, as_of: Timestamp) -> u64 {
        let not_after = self.assigned_at.partition_point(|t| *t <= as_of);
        (self.assigned_at.len() - not_after) as u64
    }
}

/// Seats left. No inventory record means nothing is available.
pub fn available(inventory: Option<&Inventory>, usage: Option<&SeatUsage>) -> u64 {
    let Some(inv) = inventory else { return 0 };
    let ours = usage.map_or(0, |u| u.after(inv.as_of));
    inv.purchased_units
        .saturating_sub(inv.assigned_units)
        .saturating_sub(ours)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ts(ms: i64) -> Timestamp {
        Timestamp::from_millis(ms)
    }

    #[test]
    fn counts_only_assignments_after_the_snapshot() {
        let inv = Inventory {
            purchased_units: 10,
            assigned_units: 7,
            as_of: ts(100),
        };
        let mut usage = SeatUsage::default();
        usage.record(ts(50));
        usage.record(ts(150));
        assert_eq!(available(Some(&inv), Some(&usage)), 2);
        usage.record(ts(120));
        usage.record(ts(130));
        assert_eq!(available(Some(&inv), Some(&usage)), 0);
        usage.record(ts(140));
        assert_eq!(available(Some(&inv), Some(&usage)), 0, "never below zero");
    }

    #[test]
    fn no_inventory_no_seats() {
        assert_eq!(available(None, None), 0);
        let over = Inventory {
            purchased_units: 1,
            assigned_units: 5,
            as_of: ts(0),
        };
        assert_eq!(available(Some(&over), None), 0);
    }
}
