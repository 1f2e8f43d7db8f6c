//! pitr-storage (being written).
