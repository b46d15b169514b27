//! joinshield
