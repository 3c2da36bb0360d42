//! Local Stripe emulator.
