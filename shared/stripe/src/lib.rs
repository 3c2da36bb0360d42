//! tollgate-stripe
