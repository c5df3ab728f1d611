//! `megastore`: schemas, entity groups with serializable transactions, and each group's
//! write-ahead log kept in its root row and replicated with Paxos. Work in progress: see
//! the project's open issues.
