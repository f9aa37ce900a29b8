//! SyncML DM 1.2.
