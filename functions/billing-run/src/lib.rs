//! billing-run Lambda handler (library part; main.rs only runs it).
