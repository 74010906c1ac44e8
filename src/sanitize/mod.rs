//! Request sanitization: values checked before they reach a back end.

pub mod injection;
