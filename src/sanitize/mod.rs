//! Request sanitization below and around the HTTP parser: rules that decide whether bytes or
//! requests may reach the rest of the request path at all.

pub mod framing;
