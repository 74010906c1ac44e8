//! Authentication: who may pass, and how they prove it.

pub mod password;
