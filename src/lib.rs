//! sft-search library.
