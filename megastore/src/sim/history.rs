//! Histories of client operations on registers (one per key), as JSON lines, and their
//! linearizability check. One completed operation per line:
//!
//! ```text
//! {"client":0,"key":"account-1","op":"cas","input":[3,7],"output":true,"call":1000,"return":2000,"status":"ok"}
//! ```
//!
//! `input` is null for a read, the value for a write, `[expected, new]` for a
//! compare-and-set; `output` the value read (null: none), null for a write, and whether a
//! compare-and-set swapped. `call` and `return` are nanoseconds of the simulated clock;
//! `return` is null when the outcome is unknown. `status` is `ok`, `fail` (known not to
//! have taken effect) or `unknown` (timed out: it may take effect at any later time).

use std::collections::BTreeMap;

use serde_json::{json, Value as Json};

use super::linearizability::{check, Event, Op};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Ok,
    Fail,
    Unknown,
}

impl Status {
    fn name(self) -> &'static str {
        match self {
            Status::Ok => "ok",
            Status::Fail => "fail",
            Status::Unknown => "unknown",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Call {
    Read {
        output: Option<i64>,
    },
    Write {
        value: i64,
    },
    Cas {
        expected: Option<i64>,
        new: i64,
        swapped: Option<bool>,
    },
}

/// One operation of a history.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Operation {
    pub client: u64,
    pub key: String,
    pub call: Call,
    pub called_ns: u64,
    pub returned_ns: Option<u64>,
    pub status: Status,
}

impl Operation {
    pub fn to_json_line(&self) -> String {
        let (op, input, output) = match &self.call {
            Call::Read { output } => ("read", Json::Null, json!(output)),
            Call::Write { value } => ("write", json!(value), Json::Null),
            Call::Cas {
                expected,
                new,
                swapped,
            } => ("cas", json!([expected, new]), json!(swapped)),
        };
        json!({
            "client": self.client,
            "key": self.key,
            "op": op,
            "input": input,
            "output": output,
            "call": self.called_ns,
            "return": self.returned_ns,
            "status": self.status.name(),
        })
        .to_string()
    }

    pub fn from_json_line(line: &str) -> Result<Operation, String> {
        let j: Json = serde_json::from_str(line).map_err(|e| format!("not JSON: {e}"))?;
        let field = |name: &str| j.get(name).ok_or_else(|| format!("no {name} in {line}"));
        let int = |v: &Json| -> Result<Option<i64>, String> {
            match v {
                Json::Null => Ok(None),
                v => v
                    .as_i64()
                    .map(Some)
                    .ok_or_else(|| format!("{v} is not an integer")),
            }
        };
        let status = match field("status")?.as_str() {
            Some("ok") => Status::Ok,
            Some("fail") => Status::Fail,
            Some("unknown") => Status::Unknown,
            other => return Err(format!("bad status {other:?}")),
        };
        let input = field("input")?;
        let output = field("output")?;
        let call = match field("op")?.as_str() {
            Some("read") => Call::Read {
                output: int(output)?,
            },
            Some("write") => Call::Write {
                value: int(input)?.ok_or("a write needs a value")?,
            },
            Some("cas") => {
                let pair = input
                    .as_array()
                    .filter(|a| a.len() == 2)
                    .ok_or("bad cas input")?;
                Call::Cas {
                    expected: int(&pair[0])?,
                    new: int(&pair[1])?.ok_or("a cas needs a new value")?,
                    swapped: output.as_bool(),
                }
            }
            other => return Err(format!("bad op {other:?}")),
        };
        Ok(Operation {
            client: field("client")?.as_u64().ok_or("bad client")?,
            key: field("key")?.as_str().ok_or("bad key")?.to_string(),
            call,
            called_ns: field("call")?.as_u64().ok_or("bad call time")?,
            returned_ns: field("return")?.as_u64(),
            status,
        })
    }
}

/// Checks a history, key by key, for linearizability (each key a register that starts
/// empty). Returns the keys that fail, with why.
pub fn check_history(history: &[Operation]) -> Vec<String> {
    let mut by_key: BTreeMap<&str, Vec<Event<i64>>> = BTreeMap::new();
    for op in history {
        if op.status == Status::Fail {
            continue; // known not to have taken effect
        }
        let known = op.status == Status::Ok;
        let event_op = match &op.call {
            Call::Read { output } => Op::Read { output: *output },
            Call::Write { value } => Op::Write { value: *value },
            Call::Cas {
                expected,
                new,
                swapped,
            } => Op::Cas {
                expected: *expected,
                new: *new,
                succeeded: if known { *swapped } else { None },
            },
        };
        by_key.entry(&op.key).or_default().push(Event {
            op: event_op,
            call: op.called_ns,
            ret: if known { op.returned_ns } else { None },
        });
    }
    by_key
        .into_iter()
        .filter_map(|(key, events)| check(&events).err().map(|e| format!("key {key}: {e}")))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn op(call: Call, called: u64, returned: Option<u64>, status: Status) -> Operation {
        Operation {
            client: 1,
            key: "k".into(),
            call,
            called_ns: called,
            returned_ns: returned,
            status,
        }
    }

    #[test]
    fn lines_round_trip() {
        let ops = [
            op(Call::Read { output: None }, 1, Some(2), Status::Ok),
            op(Call::Write { value: 5 }, 3, None, Status::Unknown),
            op(
                Call::Cas {
                    expected: Some(5),
                    new: 6,
                    swapped: Some(true),
                },
                4,
                Some(9),
                Status::Ok,
            ),
        ];
        for o in ops {
            let line = o.to_json_line();
            assert_eq!(Operation::from_json_line(&line), Ok(o), "{line}");
        }
        assert!(Operation::from_json_line("{\"client\":1}").is_err());
    }

    #[test]
    fn a_stale_read_after_an_acknowledged_write_is_caught() {
        let good = [
            op(Call::Write { value: 1 }, 1, Some(2), Status::Ok),
            op(Call::Read { output: Some(1) }, 3, Some(4), Status::Ok),
        ];
        assert!(check_history(&good).is_empty());
        let stale = [
            op(Call::Write { value: 1 }, 1, Some(2), Status::Ok),
            op(Call::Read { output: None }, 3, Some(4), Status::Ok),
        ];
        assert_eq!(check_history(&stale).len(), 1);
        // An unknown write may take effect later, or never: both reads are fine.
        let unknown = [
            op(Call::Write { value: 1 }, 1, None, Status::Unknown),
            op(Call::Read { output: None }, 3, Some(4), Status::Ok),
            op(Call::Read { output: Some(1) }, 5, Some(6), Status::Ok),
        ];
        assert!(check_history(&unknown).is_empty());
        // But once seen, it cannot be unseen.
        let flicker = [
            op(Call::Write { value: 1 }, 1, None, Status::Unknown),
            op(Call::Read { output: Some(1) }, 3, Some(4), Status::Ok),
            op(Call::Read { output: None }, 5, Some(6), Status::Ok),
        ];
        assert_eq!(check_history(&flicker).len(), 1);
    }
}
