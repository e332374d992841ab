//! A tenant's autoclaim settings.

#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Scope {
    #[default]
    AllEnvironments,
    ManagedEnvironmentsOnly,
}

/// Autoclaim is off until an administrator turns it on; a tenant with no settings is off.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct TenantSettings {
    pub autoclaim_enabled: bool,
    pub scope: Scope,
    /// LOW_SEATS is published when an assignment leaves this many seats or fewer; 0 sends none.
    pub low_seats_threshold: u32,
}
