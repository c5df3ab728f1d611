//! Queues between entity groups (Megastore §3.3.1): a transaction on one group sends a
//! message to another group's inbox, atomically with its other writes; the message
//! reaches the inbox later, in a transaction on the receiving group.
//!
//! A message lives in three places in turn, all in the `q` family of the root table's
//! Bigtable table, under the group's key (format: `docs/megastore-layout.md`):
//!
//! 1. the sender's **outbox**, written when the sending entry is applied;
//! 2. the receiver's **inbox**, written by a delivery entry on the receiver, which also
//!    raises the receiver's **watermark** for that sender and queue: the id of the last
//!    message delivered from it. A delivery skips messages at or below the watermark,
//!    so delivering twice (after a crash, or by two deliverers at once) delivers once,
//!    and messages from one sender arrive in the order they were sent;
//! 3. gone: a receiving transaction consumes it from the inbox, and, once delivered, a
//!    later entry on the sender forgets it from the outbox.

use std::ops::Bound;

use bigtable::coding::Reader;
use bigtable::{Engine, ReadRequest, RowFilter, RowRange, RowSet};

use crate::entity::{encode_value, put_bytes, read_bytes, read_value};
use crate::keys::{encode_part, Value};
use crate::layout::{self, column, prefix_end};
use crate::{Error, GroupKey};

/// The column family of outboxes, inboxes and watermarks.
pub const FAMILY: &str = "q";
/// The kinds of mailbox cell: the first byte of the qualifier (the queue's name
/// follows), and a byte of the row key.
pub(crate) const OUTBOX: u8 = b'o';
pub(crate) const INBOX: u8 = b'i';
pub(crate) const WATERMARK: u8 = b'w';
/// The head of an outbox or inbox: the last id forgotten or consumed. Messages leave
/// a mailbox oldest first, so every live one is past the head, and reads start there
/// instead of walking every message the mailbox ever held.
pub(crate) const OUTBOX_HEAD: u8 = b'O';
pub(crate) const INBOX_HEAD: u8 = b'I';

/// The head kind of a mailbox kind.
pub(crate) fn head_of(kind: u8) -> u8 {
    if kind == OUTBOX {
        OUTBOX_HEAD
    } else {
        INBOX_HEAD
    }
}

/// A message's place in a mailbox: the timestamp of the entry that put it there and
/// its order among that entry's messages. In an outbox it is the message's id.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct MessageId {
    pub timestamp: i64,
    pub seq: u32,
}

impl MessageId {
    /// 12 bytes that sort like the id: the timestamp with its sign bit flipped, then
    /// the sequence number, both big-endian.
    pub(crate) fn encode(&self, out: &mut Vec<u8>) {
        out.extend_from_slice(&((self.timestamp as u64) ^ (1 << 63)).to_be_bytes());
        out.extend_from_slice(&self.seq.to_be_bytes());
    }

    pub(crate) fn read(r: &mut Reader<'_>) -> Option<MessageId> {
        let ts = u64::from_be_bytes(r.take(8)?.try_into().ok()?) ^ (1 << 63);
        let seq = u32::from_be_bytes(r.take(4)?.try_into().ok()?);
        Some(MessageId {
            timestamp: ts as i64,
            seq,
        })
    }
}

/// Messages of one sender with their ids there, as a delivery carries them.
pub type IdentifiedPayloads = Vec<(MessageId, Vec<u8>)>;

/// Cells read: (row key, value).
type Cells = Vec<(Vec<u8>, Vec<u8>)>;

/// A message in an inbox, as a receiver gets it.
#[derive(Debug, Clone, PartialEq)]
pub struct Message {
    /// The group whose transaction sent it.
    pub from: GroupKey,
    /// Its id in the sender's outbox: unique per sender, increasing in send order.
    pub id: MessageId,
    pub payload: Vec<u8>,
    /// Where it sits in the receiver's inbox (what consuming it deletes).
    pub(crate) slot: MessageId,
}

/// A message in an outbox, waiting to be delivered.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Outgoing {
    pub id: MessageId,
    pub from: GroupKey,
    pub to: GroupKey,
    pub payload: Vec<u8>,
}

pub(crate) fn encode_group(out: &mut Vec<u8>, group: &GroupKey) {
    put_bytes(out, group.root.as_bytes());
    bigtable::coding::put_varint(out, group.key.len() as u64);
    for v in &group.key {
        encode_value(out, v);
    }
}

pub(crate) fn read_group(r: &mut Reader<'_>) -> Option<GroupKey> {
    let root = String::from_utf8(read_bytes(r)?.to_vec()).ok()?;
    let n = r.varint_usize()?;
    if n > r.remaining() {
        return None;
    }
    let key = (0..n)
        .map(|_| read_value(r))
        .collect::<Option<Vec<Value>>>()?;
    Some(GroupKey { root, key })
}

/// The row-key prefix of one kind of mailbox cell of `queue` in the group `group_row`.
pub(crate) fn mailbox_prefix(group_row: &[u8], queue: &str, kind: u8) -> Vec<u8> {
    let mut row = group_row.to_vec();
    encode_part(&mut row, &Value::String(queue.into()), false);
    row.push(kind);
    row
}

/// The row of the outbox or inbox cell at `id`.
pub(crate) fn mailbox_row(group_row: &[u8], queue: &str, kind: u8, id: MessageId) -> Vec<u8> {
    let mut row = mailbox_prefix(group_row, queue, kind);
    id.encode(&mut row);
    row
}

/// The row of a mailbox's head cell (the mailbox's own prefix: before its messages).
pub(crate) fn head_row(group_row: &[u8], queue: &str, kind: u8) -> Vec<u8> {
    mailbox_prefix(group_row, queue, kind)
}

/// The head of a mailbox of `queue` (`kind`: OUTBOX or INBOX) as of `timestamp`.
pub(crate) fn read_head(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    queue: &str,
    kind: u8,
    timestamp: Option<i64>,
) -> Result<Option<MessageId>, Error> {
    read_id_cell(
        engine,
        table,
        &head_row(group_row, queue, kind),
        &qualifier(head_of(kind), queue),
        timestamp,
    )
}

/// The row of the watermark of messages from `from` on `queue`.
pub(crate) fn watermark_row(group_row: &[u8], queue: &str, from: &GroupKey) -> Vec<u8> {
    let mut row = mailbox_prefix(group_row, queue, WATERMARK);
    encode_group(&mut row, from);
    row
}

pub(crate) fn outbox_cell(from: &GroupKey, to: &GroupKey, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    encode_group(&mut out, from);
    encode_group(&mut out, to);
    put_bytes(&mut out, payload);
    out
}

pub(crate) fn inbox_cell(from: &GroupKey, id: MessageId, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(payload.len() + 32);
    encode_group(&mut out, from);
    id.encode(&mut out);
    put_bytes(&mut out, payload);
    out
}

/// A watermark or head cell.
pub(crate) fn id_cell(id: MessageId) -> Vec<u8> {
    let mut out = Vec::with_capacity(12);
    id.encode(&mut out);
    out
}

/// The qualifier of `queue`'s cells of one kind.
pub(crate) fn qualifier(kind: u8, queue: &str) -> Vec<u8> {
    let mut q = Vec::with_capacity(queue.len() + 1);
    q.push(kind);
    q.extend_from_slice(queue.as_bytes());
    q
}

/// Every queue's cells of one kind.
fn every_queue(kind: u8) -> RowFilter {
    RowFilter::ColumnRange {
        family: FAMILY.into(),
        start: Bound::Included(vec![kind]),
        end: Bound::Excluded(vec![kind + 1]),
    }
}

fn damaged(what: &str) -> Error {
    Error::Damaged(format!("a queue's {what} cell does not decode"))
}

/// The id a mailbox row ends with.
fn id_of_row(row: &[u8]) -> Option<MessageId> {
    let at = row.len().checked_sub(12)?;
    MessageId::read(&mut Reader::new(&row[at..]))
}

/// The non-empty cells of one kind in a mailbox of `queue`, as of `timestamp` (the
/// newest when `None`), in row order, at most `limit`.
fn mailbox_cells(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    queue: &str,
    kind: u8,
    timestamp: Option<i64>,
    limit: usize,
) -> Result<Cells, Error> {
    let prefix = mailbox_prefix(group_row, queue, kind);
    let end = prefix_end(&prefix).map_or(Bound::Unbounded, Bound::Excluded);
    let start = match read_head(engine, table, group_row, queue, kind, timestamp)? {
        Some(head) => Bound::Excluded(mailbox_row(group_row, queue, kind, head)),
        None => Bound::Included(prefix),
    };
    let request = ReadRequest {
        rows: RowSet::range(RowRange { start, end }),
        filter: Some(layout::newest_at(
            timestamp,
            vec![column(FAMILY, &qualifier(kind, queue))],
        )),
        ..ReadRequest::default()
    };
    let mut out = Vec::new();
    // Consumed cells are empty: keep reading past them up to `limit` live ones.
    for row in engine.read_rows(table, &request)? {
        for cell in row.cells {
            if !cell.value.is_empty() {
                out.push((row.key.clone(), cell.value));
            }
        }
        if out.len() >= limit {
            out.truncate(limit);
            break;
        }
    }
    Ok(out)
}

/// The live messages of the group's mailbox of `queue` that holds `M`s (its inbox for
/// [`Message`], its outbox for [`Outgoing`]) as of `timestamp`, oldest first, at most
/// `limit`.
pub(crate) fn read_mailbox<M: MailboxCell>(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    queue: &str,
    timestamp: Option<i64>,
    limit: usize,
) -> Result<Vec<M>, Error> {
    let cells = mailbox_cells(engine, table, group_row, queue, M::KIND, timestamp, limit)?;
    cells
        .into_iter()
        .map(|(row, value)| M::decode(&row, &value).ok_or_else(|| damaged("mailbox")))
        .collect()
}

/// What a mailbox's message cells decode to.
pub(crate) trait MailboxCell: Sized {
    /// The mailbox: [`INBOX`] or [`OUTBOX`].
    const KIND: u8;
    fn decode(row: &[u8], value: &[u8]) -> Option<Self>;
}

impl MailboxCell for Message {
    const KIND: u8 = INBOX;

    fn decode(row: &[u8], value: &[u8]) -> Option<Message> {
        let r = &mut Reader::new(value);
        let message = Message {
            from: read_group(r)?,
            id: MessageId::read(r)?,
            payload: read_bytes(r)?.to_vec(),
            slot: id_of_row(row)?,
        };
        r.is_empty().then_some(message)
    }
}

impl MailboxCell for Outgoing {
    const KIND: u8 = OUTBOX;

    fn decode(row: &[u8], value: &[u8]) -> Option<Outgoing> {
        let r = &mut Reader::new(value);
        let outgoing = Outgoing {
            from: read_group(r)?,
            to: read_group(r)?,
            payload: read_bytes(r)?.to_vec(),
            id: id_of_row(row)?,
        };
        r.is_empty().then_some(outgoing)
    }
}

/// The last message id delivered from `from` on `queue` to the group, as of
/// `timestamp`.
pub(crate) fn read_watermark(
    engine: &Engine,
    table: &str,
    group_row: &[u8],
    queue: &str,
    from: &GroupKey,
    timestamp: Option<i64>,
) -> Result<Option<MessageId>, Error> {
    read_id_cell(
        engine,
        table,
        &watermark_row(group_row, queue, from),
        &qualifier(WATERMARK, queue),
        timestamp,
    )
}

/// A cell holding one id (a watermark or a head), as of `timestamp`.
fn read_id_cell(
    engine: &Engine,
    table: &str,
    row: &[u8],
    qualifier: &[u8],
    timestamp: Option<i64>,
) -> Result<Option<MessageId>, Error> {
    let filter = layout::newest_at(timestamp, vec![column(FAMILY, qualifier)]);
    let Some(found) = engine.read_row(table, row, Some(&filter))? else {
        return Ok(None);
    };
    match found.cells.first() {
        Some(cell) => MessageId::read(&mut Reader::new(&cell.value))
            .map(Some)
            .ok_or_else(|| damaged("watermark or head")),
        None => Ok(None),
    }
}

/// Calls `each(queue, message)` for every live message of kind `M` (in outboxes or
/// inboxes) in every mailbox of `table`, as of the newest cells.
fn each_live<M: MailboxCell>(
    engine: &Engine,
    table: &str,
    mut each: impl FnMut(&str, M),
) -> Result<(), Error> {
    let request = ReadRequest {
        rows: RowSet::all(),
        filter: Some(layout::newest_at(None, vec![every_queue(M::KIND)])),
        ..ReadRequest::default()
    };
    for row in engine.read_rows(table, &request)? {
        for cell in row.cells.iter().filter(|c| !c.value.is_empty()) {
            let queue = cell
                .qualifier
                .get(1..)
                .and_then(|q| std::str::from_utf8(q).ok())
                .ok_or_else(|| damaged("mailbox"))?;
            let message = M::decode(&row.key, &cell.value).ok_or_else(|| damaged("mailbox"))?;
            each(queue, message);
        }
    }
    Ok(())
}

/// The senders of every message waiting in an outbox of `table` (the newest cells):
/// where a deliverer starting up has work.
pub(crate) fn senders_with_mail(engine: &Engine, table: &str) -> Result<Vec<GroupKey>, Error> {
    let mut senders = Vec::new();
    each_live(engine, table, |_, outgoing: Outgoing| {
        if !senders.contains(&outgoing.from) {
            senders.push(outgoing.from);
        }
    })?;
    Ok(senders)
}

/// Calls `each(queue, id)` for every message in every outbox (`kind` OUTBOX) or inbox
/// (INBOX) of `table`, as of the newest cells: for the backlog figures.
pub(crate) fn each_message(
    engine: &Engine,
    table: &str,
    kind: u8,
    mut each: impl FnMut(&str, MessageId),
) -> Result<(), Error> {
    match kind {
        INBOX => each_live(engine, table, |queue, m: Message| each(queue, m.id)),
        _ => each_live(engine, table, |queue, o: Outgoing| each(queue, o.id)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ids_sort_like_their_bytes() {
        let ids = [
            MessageId {
                timestamp: -5,
                seq: 9,
            },
            MessageId {
                timestamp: 0,
                seq: 0,
            },
            MessageId {
                timestamp: 0,
                seq: 1,
            },
            MessageId {
                timestamp: 1_700_000_000_000_000,
                seq: 0,
            },
        ];
        let bytes: Vec<Vec<u8>> = ids
            .iter()
            .map(|id| {
                let mut b = Vec::new();
                id.encode(&mut b);
                b
            })
            .collect();
        for pair in bytes.windows(2) {
            assert!(pair[0] < pair[1]);
        }
        for (id, b) in ids.iter().zip(&bytes) {
            assert_eq!(MessageId::read(&mut Reader::new(b)), Some(*id));
        }
    }

    #[test]
    fn damaged_outbox_cells_are_none_not_panics() {
        let from = GroupKey::new("A", vec![Value::Int64(1)]);
        let to = GroupKey::new("B", vec![Value::String("x".into())]);
        let cell = outbox_cell(&from, &to, b"hello");
        let row = mailbox_row(
            b"g",
            "q",
            OUTBOX,
            MessageId {
                timestamp: 3,
                seq: 1,
            },
        );
        let decoded = Outgoing::decode(&row, &cell).expect("decodes");
        assert_eq!((decoded.from, decoded.to), (from, to));
        assert_eq!(decoded.payload, b"hello");
        for cut in 0..cell.len() {
            assert!(Outgoing::decode(&row, &cell[..cut]).is_none());
        }
    }
}
