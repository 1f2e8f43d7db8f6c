//! pitr-repo (being written).
