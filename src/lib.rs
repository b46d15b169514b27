//! joinshield
pub mod classify;
