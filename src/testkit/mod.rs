//! Test kit: the stand-in of the guest API that the demo, the tests and the benchmarks put
//! behind the shield ([`standin`]).

pub mod standin;
