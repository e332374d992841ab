//! The domain: catalog, activity, settings, policies, directory, seats and the decision engine. Pure:
//! no I/O, no clock.
pub mod activity;
pub mod catalog;
pub mod claims;
pub mod decision;
pub mod directory;
pub mod ids;
pub mod policy;
pub mod propagation;
pub mod seats;
pub mod settings;
pub mod time;
