//! pitr-core (being written).
