//! The text-form printer.
