//! tollgate-app
