//! JWT validation (to be written).
