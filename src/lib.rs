//! joinshield
pub mod log;
