//! Schemas that ship with the crate: the paper's PhotoApp (`schemas/photoapp.schema`),
//! which `megastore serve` runs when given no schema, and the tests use.

pub const PHOTO_APP: &str = include_str!("../schemas/photoapp.schema");
