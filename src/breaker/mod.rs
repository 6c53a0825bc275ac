//! The per-number circuit breaker: a pure state machine and the rules table.
