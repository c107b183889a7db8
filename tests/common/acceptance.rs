//! The store acceptance suite: filled in by the storage work.
