//! The text-form parser.
