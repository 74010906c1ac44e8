//! Phase 7, authorize: may this person see this kind of data about this patient.
//!
//! Not built yet: it lands with the access-policy issue (role x data category x patient, care
//! team, grants, break-glass). Until then a route with `auth: session` admits every live
//! session, and the phase has no code, so that nothing pretends to check what it does not.
//! Its place in the order is fixed: after `authenticate` (it needs the identity) and before the
//! per-identity rate limit and `upstream`.
