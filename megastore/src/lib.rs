//! `megastore`: schemas, entity groups with serializable transactions, and each group's
//! write-ahead log kept in its root row and replicated with Paxos. Built so far: the
//! schema language (`schema`) and row keys (`keys`).

pub mod catalog;
pub mod keys;
pub mod schema;
