//! tollgate-events
