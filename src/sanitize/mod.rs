//! Request sanitization: refuse what is malformed, ambiguous or hostile before it reaches a back
//! end (DESIGN.md phases 3 and 4). Each rule answers with a fixed refusal and a stable code.

pub mod injection;
pub mod request;
