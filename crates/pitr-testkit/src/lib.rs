//! pitr-testkit (being written).
