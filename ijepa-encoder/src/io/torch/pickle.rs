//! A data-only unpickler for PyTorch checkpoints: it builds values, never
//! runs code, and knows the handful of callables `torch.save` writes
//! (`OrderedDict`, `_rebuild_tensor_v2`, `_rebuild_parameter`); any other
//! call is kept as an opaque value.
//!
//! Unlike candle's reader, the memo aliases the objects it stores, as
//! Python's does: a dictionary saved under two keys (`{'encoder': sd,
//! 'target_encoder': sd}`) is memoized while still empty and filled
//! afterwards, and both keys then see it full. Every length is checked
//! against the bytes that remain before anything is allocated, and the
//! object graph is taken apart iteratively once read (a graph nested
//! through the memo can be deeper than any stack), so no input can make it
//! allocate without bound, recurse without bound or panic.

use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// A tensor as `torch._utils._rebuild_tensor_v2` describes it.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct TensorRef {
    /// Storage class name, e.g. `FloatStorage`.
    pub storage_type: String,
    /// Storage key: the file `data/{key}` of the archive.
    pub key: String,
    /// Elements in the storage.
    pub storage_len: usize,
    /// First element, in elements.
    pub offset: usize,
    /// Shape.
    pub shape: Vec<usize>,
    /// Strides, in elements.
    pub stride: Vec<usize>,
}

/// Values inside a container, shared as Python shares objects.
type Node = Rc<RefCell<Vec<Value>>>;

fn node(values: Vec<Value>) -> Node {
    Rc::new(RefCell::new(values))
}

/// A Python value as the pickle builds it.
#[derive(Clone)]
pub(crate) enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer wider than 64 bits (kept, never used as a number).
    BigInt,
    Float(f64),
    Str(Rc<str>),
    Bytes,
    List(Node),
    Tuple(Node),
    /// Keys and values, alternating.
    Dict(Node),
    Global(Rc<(String, String)>),
    /// A call we do not interpret: `[callable, args]`.
    Call(Node),
    /// `[persistent id]`.
    Persistent(Node),
    Tensor(Rc<TensorRef>),
}

impl Value {
    pub(crate) fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(i64::from(*b)),
            _ => None,
        }
    }

    fn as_usize(&self) -> Option<usize> {
        self.as_int().and_then(|i| usize::try_from(i).ok())
    }

    fn items(&self) -> Option<Vec<Value>> {
        match self {
            Value::Tuple(t) | Value::List(t) => Some(t.borrow().clone()),
            _ => None,
        }
    }

    /// The `(key, value)` pairs of a dictionary.
    fn pairs(&self) -> Vec<(Value, Value)> {
        match self {
            Value::Dict(d) => d
                .borrow()
                .chunks_exact(2)
                .map(|kv| (kv[0].clone(), kv[1].clone()))
                .collect(),
            _ => vec![],
        }
    }

    /// The value under string key `key` of a dictionary.
    pub(crate) fn get(&self, key: &str) -> Option<Value> {
        self.pairs()
            .into_iter()
            .find(|(k, _)| k.as_str() == Some(key))
            .map(|(_, v)| v)
    }

    /// The string keys of a dictionary.
    pub(crate) fn keys(&self) -> Vec<String> {
        self.pairs()
            .iter()
            .filter_map(|(k, _)| k.as_str().map(str::to_string))
            .collect()
    }

    /// The `(name, tensor)` entries of a dictionary (a state dict); other
    /// entries are left out.
    pub(crate) fn tensors(&self) -> Vec<(String, TensorRef)> {
        self.pairs()
            .into_iter()
            .filter_map(|(k, v)| match (k.as_str(), v) {
                (Some(k), Value::Tensor(t)) => Some((k.to_string(), (*t).clone())),
                _ => None,
            })
            .collect()
    }

    fn node(&self) -> Option<&Node> {
        match self {
            Value::List(n)
            | Value::Tuple(n)
            | Value::Dict(n)
            | Value::Call(n)
            | Value::Persistent(n) => Some(n),
            _ => None,
        }
    }
}

/// Takes a graph apart without recursion: every container reachable from
/// `roots` is emptied, so no drop nests deeper than one level (and cycles,
/// which a pickle can build, are broken).
fn teardown(roots: Vec<Value>) {
    let mut work = roots;
    while let Some(v) = work.pop() {
        if let Some(n) = v.node() {
            // A container already emptied (shared, or in a cycle) is skipped.
            if let Ok(mut inner) = n.try_borrow_mut() {
                work.append(&mut inner);
            }
        }
    }
}

/// What can go wrong reading a pickle: always the byte offset and why.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct PickleError {
    pub at: usize,
    pub reason: String,
}

impl std::fmt::Display for PickleError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "malformed pickle at byte {}: {}", self.at, self.reason)
    }
}

type Result<T> = std::result::Result<T, PickleError>;

/// Deepest nesting of tuples/lists/dicts a pickle may build (PyTorch state
/// dicts nest 3–4 levels).
const MAX_DEPTH: usize = 64;

enum Item {
    Mark,
    Value(Value, usize),
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Item>,
    memo: HashMap<u32, Value>,
}

fn depth_of(items: &[Item]) -> usize {
    items
        .iter()
        .map(|i| match i {
            Item::Value(_, d) => *d,
            Item::Mark => 0,
        })
        .max()
        .unwrap_or(0)
}

impl<'a> Machine<'a> {
    fn err<T>(&self, reason: impl Into<String>) -> Result<T> {
        Err(PickleError {
            at: self.pos,
            reason: reason.into(),
        })
    }

    fn take(&mut self, n: usize) -> Result<&'a [u8]> {
        match self.data.get(self.pos..self.pos.saturating_add(n)) {
            Some(s) if self.pos.checked_add(n).is_some() => {
                self.pos += n;
                Ok(s)
            }
            _ => self.err(format!(
                "{n} bytes announced, {} left",
                self.data.len() - self.pos.min(self.data.len())
            )),
        }
    }

    fn u8(&mut self) -> Result<u8> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64> {
        let b = self.take(8)?;
        Ok(u64::from_le_bytes(b.try_into().expect("8 bytes")))
    }

    fn len_u64(&mut self) -> Result<usize> {
        let n = self.u64()?;
        usize::try_from(n).or_else(|_| self.err(format!("length {n} is too large")))
    }

    fn line(&mut self) -> Result<&'a str> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let Some(end) = rest.iter().position(|&b| b == b'\n') else {
            return self.err("unterminated line");
        };
        let text = std::str::from_utf8(&rest[..end]).or_else(|_| self.err("line is not UTF-8"))?;
        self.pos += end + 1;
        Ok(text)
    }

    fn text(&mut self, n: usize) -> Result<Value> {
        let bytes = self.take(n)?;
        match std::str::from_utf8(bytes) {
            Ok(s) => Ok(Value::Str(s.into())),
            Err(_) => self.err("string is not UTF-8"),
        }
    }

    fn push(&mut self, v: Value) {
        self.push_nested(v, 0);
    }

    fn push_nested(&mut self, v: Value, depth: usize) {
        self.stack.push(Item::Value(v, depth));
    }

    fn pop(&mut self) -> Result<(Value, usize)> {
        match self.stack.pop() {
            Some(Item::Value(v, d)) => Ok((v, d)),
            Some(Item::Mark) => self.err("a mark where a value was expected"),
            None => self.err("the stack is empty"),
        }
    }

    fn top(&mut self) -> Result<&mut Value> {
        match self.stack.last_mut() {
            Some(Item::Value(v, _)) => Ok(v),
            _ => Err(PickleError {
                at: self.pos,
                reason: "no value on the stack".into(),
            }),
        }
    }

    /// The values above the topmost mark, which is removed.
    fn pop_mark(&mut self) -> Result<(Vec<Value>, usize)> {
        let Some(mark) = self.stack.iter().rposition(|i| matches!(i, Item::Mark)) else {
            return self.err("no mark on the stack");
        };
        let items: Vec<Item> = self.stack.split_off(mark + 1);
        self.stack.pop();
        let depth = depth_of(&items);
        let values = items
            .into_iter()
            .filter_map(|i| match i {
                Item::Value(v, _) => Some(v),
                Item::Mark => None,
            })
            .collect();
        Ok((values, depth))
    }

    /// Pushes a container built from values of nesting `depth`.
    fn push_container(&mut self, v: Value, depth: usize) -> Result<()> {
        if depth + 1 > MAX_DEPTH {
            return self.err(format!("nested deeper than {MAX_DEPTH} levels"));
        }
        self.push_nested(v, depth + 1);
        Ok(())
    }

    fn memo_get(&mut self, id: u32) -> Result<()> {
        match self.memo.get(&id) {
            Some(v) => {
                let v = v.clone();
                self.push(v);
                Ok(())
            }
            None => self.err(format!("memo {id} was never stored")),
        }
    }

    fn memo_put(&mut self, id: u32) -> Result<()> {
        let v = self.top()?.clone();
        self.memo.insert(id, v);
        Ok(())
    }

    fn set_items(&mut self, pairs: Vec<Value>) -> Result<()> {
        if !pairs.len().is_multiple_of(2) {
            return self.err("a dictionary update with an odd number of items");
        }
        let target = self.top()?.clone();
        let Value::Dict(d) = target else {
            return self.err("items set on something that is not a dictionary");
        };
        let Ok(mut d) = d.try_borrow_mut() else {
            return self.err("a dictionary updated while being built");
        };
        let mut it = pairs.into_iter();
        while let (Some(k), Some(v)) = (it.next(), it.next()) {
            match d.chunks_exact_mut(2).find(|kv| same_key(&kv[0], &k)) {
                Some(kv) => kv[1] = v,
                None => d.extend([k, v]),
            }
        }
        Ok(())
    }

    fn append(&mut self, values: Vec<Value>) -> Result<()> {
        let target = self.top()?.clone();
        match target {
            Value::List(l) => match l.try_borrow_mut() {
                Ok(mut l) => {
                    l.extend(values);
                    Ok(())
                }
                Err(_) => self.err("a list appended to while being built"),
            },
            _ => self.err("items appended to something that is not a list"),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value> {
        let name = match &callable {
            Value::Global(g) => Some((g.0.as_str(), g.1.as_str())),
            _ => None,
        };
        let items = args.items().unwrap_or_default();
        Ok(match name {
            Some(("collections", "OrderedDict")) if items.is_empty() => Value::Dict(node(vec![])),
            Some(("torch._utils", "_rebuild_tensor_v2" | "_rebuild_tensor")) => {
                match tensor_ref(&items) {
                    Some(t) => Value::Tensor(Rc::new(t)),
                    None => {
                        return self
                            .err("a tensor whose storage, offset, size or stride cannot be read")
                    }
                }
            }
            Some(("torch._utils", "_rebuild_parameter" | "_rebuild_parameter_with_state")) => {
                match items.first() {
                    Some(t @ Value::Tensor(_)) => t.clone(),
                    _ => Value::Call(node(vec![callable, args])),
                }
            }
            _ => Value::Call(node(vec![callable, args])),
        })
    }

    fn step_all(&mut self) -> Result<Value> {
        loop {
            let op = self.u8()?;
            match op {
                0x80 => {
                    let proto = self.u8()?;
                    if proto > 5 {
                        return self.err(format!("pickle protocol {proto} is newer than 5"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: a length hint
                }
                b'.' => {
                    let (v, _) = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.stack.push(Item::Mark),
                b'}' => self.push(Value::Dict(node(vec![]))),
                b']' | 0x8f => self.push(Value::List(node(vec![]))), // EMPTY_LIST, EMPTY_SET
                b')' => self.push(Value::Tuple(node(vec![]))),
                b'N' => self.push(Value::None),
                0x88 => self.push(Value::Bool(true)),
                0x89 => self.push(Value::Bool(false)),
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v.into()));
                }
                b'K' => {
                    let v = self.u8()?;
                    self.push(Value::Int(v.into()));
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v.into()));
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        usize::from(self.u8()?)
                    } else {
                        self.u32()? as usize
                    };
                    let bytes = self.take(n)?;
                    self.push(long(bytes));
                }
                b'G' => {
                    let bytes = self.take(8)?;
                    let mut buf = [0u8; 8];
                    buf.copy_from_slice(bytes);
                    self.push(Value::Float(f64::from_be_bytes(buf)));
                }
                b'X' => {
                    let n = self.u32()? as usize;
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8c => {
                    let n = usize::from(self.u8()?);
                    let v = self.text(n)?;
                    self.push(v);
                }
                0x8d => {
                    let n = self.len_u64()?;
                    let v = self.text(n)?;
                    self.push(v);
                }
                b'B' | b'C' | 0x8e | 0x96 => {
                    let n = match op {
                        b'B' => self.u32()? as usize,
                        b'C' => usize::from(self.u8()?),
                        _ => self.len_u64()?,
                    };
                    self.take(n)?;
                    self.push(Value::Bytes);
                }
                b'I' | b'L' => {
                    let line = self.line()?.trim_end_matches('L');
                    let v = match line {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        s => s.parse().map(Value::Int).unwrap_or(Value::BigInt),
                    };
                    self.push(v);
                }
                b'F' => {
                    let line = self.line()?;
                    let Ok(v) = line.parse::<f64>() else {
                        return self.err(format!("{line:?} is not a float"));
                    };
                    self.push(Value::Float(v));
                }
                b'c' => {
                    let module = self.line()?.to_string();
                    let name = self.line()?.to_string();
                    self.push(Value::Global(Rc::new((module, name))));
                }
                0x93 => {
                    let (name, _) = self.pop()?;
                    let (module, _) = self.pop()?;
                    match (module.as_str(), name.as_str()) {
                        (Some(m), Some(n)) => {
                            self.push(Value::Global(Rc::new((m.to_string(), n.to_string()))))
                        }
                        _ => return self.err("STACK_GLOBAL needs two strings"),
                    }
                }
                b't' => {
                    let (items, depth) = self.pop_mark()?;
                    self.push_container(Value::Tuple(node(items)), depth)?;
                }
                0x85..=0x87 => {
                    let n = usize::from(op - 0x84);
                    let mut items = Vec::with_capacity(n);
                    let mut depth = 0;
                    for _ in 0..n {
                        let (v, d) = self.pop()?;
                        depth = depth.max(d);
                        items.push(v);
                    }
                    items.reverse();
                    self.push_container(Value::Tuple(node(items)), depth)?;
                }
                b'l' | 0x91 => {
                    // LIST, FROZENSET
                    let (items, depth) = self.pop_mark()?;
                    self.push_container(Value::List(node(items)), depth)?;
                }
                b'd' => {
                    let (items, depth) = self.pop_mark()?;
                    self.push_container(Value::Dict(node(vec![])), depth)?;
                    self.set_items(items)?;
                }
                b'q' => {
                    let id = u32::from(self.u8()?);
                    self.memo_put(id)?;
                }
                b'r' => {
                    let id = self.u32()?;
                    self.memo_put(id)?;
                }
                0x94 => {
                    let id = u32::try_from(self.memo.len()).unwrap_or(u32::MAX);
                    self.memo_put(id)?;
                }
                b'h' => {
                    let id = u32::from(self.u8()?);
                    self.memo_get(id)?;
                }
                b'j' => {
                    let id = self.u32()?;
                    self.memo_get(id)?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    self.push(v);
                }
                b'0' => {
                    self.pop()?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b's' => {
                    let (v, _) = self.pop()?;
                    let (k, _) = self.pop()?;
                    self.set_items(vec![k, v])?;
                }
                b'u' => {
                    let (items, _) = self.pop_mark()?;
                    self.set_items(items)?;
                }
                b'a' => {
                    let (v, _) = self.pop()?;
                    self.append(vec![v])?;
                }
                b'e' | 0x90 => {
                    // APPENDS, ADDITEMS
                    let (items, _) = self.pop_mark()?;
                    self.append(items)?;
                }
                b'R' | 0x81 => {
                    let (args, da) = self.pop()?;
                    let (callable, dc) = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push_container(v, da.max(dc))?;
                }
                0x92 => {
                    // NEWOBJ_EX: cls, args, kwargs
                    let (kwargs, dk) = self.pop()?;
                    let (args, da) = self.pop()?;
                    let (cls, dc) = self.pop()?;
                    let v = Value::Call(node(vec![cls, Value::Tuple(node(vec![args, kwargs]))]));
                    self.push_container(v, dk.max(da).max(dc))?;
                }
                b'b' => {
                    // BUILD: a state dict's `_metadata`, an object's state.
                    let (_state, _) = self.pop()?;
                    self.top()?;
                }
                b'Q' => {
                    let (pid, d) = self.pop()?;
                    self.push_container(Value::Persistent(node(vec![pid])), d)?;
                }
                other => {
                    self.pos -= 1;
                    return self.err(format!("opcode 0x{other:02x} is not supported"));
                }
            }
        }
    }
}

fn same_key(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Str(x), Value::Str(y)) => x == y,
        (Value::Int(x), Value::Int(y)) => x == y,
        _ => false,
    }
}

/// A little-endian two's-complement integer.
fn long(bytes: &[u8]) -> Value {
    if bytes.len() > 8 {
        return Value::BigInt;
    }
    if bytes.is_empty() {
        return Value::Int(0);
    }
    let negative = bytes[bytes.len() - 1] & 0x80 != 0;
    let mut buf = [if negative { 0xff } else { 0 }; 8];
    buf[..bytes.len()].copy_from_slice(bytes);
    Value::Int(i64::from_le_bytes(buf))
}

/// `_rebuild_tensor_v2(storage, offset, size, stride, …)`.
fn tensor_ref(args: &[Value]) -> Option<TensorRef> {
    let Value::Persistent(pid) = args.first()? else {
        return None;
    };
    let pid = pid.borrow().first()?.items()?;
    if pid.first()?.as_str()? != "storage" {
        return None;
    }
    let storage_type = match pid.get(1)? {
        Value::Global(g) => g.1.clone(),
        _ => return None,
    };
    let ints =
        |v: &Value| -> Option<Vec<usize>> { v.items()?.iter().map(Value::as_usize).collect() };
    Some(TensorRef {
        storage_type,
        key: pid.get(2)?.as_str()?.to_string(),
        storage_len: pid.get(4)?.as_usize()?,
        offset: args.get(1)?.as_usize()?,
        shape: ints(args.get(2)?)?,
        stride: ints(args.get(3)?)?,
    })
}

/// Runs the pickle in `data`, hands the object it stops with to `read`,
/// then takes the whole graph apart (see [`teardown`]).
pub(crate) fn load<T>(data: &[u8], read: impl FnOnce(&Value) -> T) -> Result<T> {
    let mut machine = Machine {
        data,
        pos: 0,
        stack: vec![],
        memo: HashMap::new(),
    };
    let result = machine.step_all();
    let mut rest: Vec<Value> = machine.memo.drain().map(|(_, v)| v).collect();
    rest.extend(machine.stack.drain(..).filter_map(|i| match i {
        Item::Value(v, _) => Some(v),
        Item::Mark => None,
    }));
    let out = result.map(|root| {
        let out = read(&root);
        rest.push(root);
        out
    });
    teardown(rest);
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// `pickle.dumps(x, protocol=2)` of `d = {'a': 1}; x = {'e': d, 't': d}`.
    const SHARED: &[u8] = b"\x80\x02}q\x00(X\x01\x00\x00\x00eq\x01}q\x02X\x01\x00\x00\x00aq\x03K\x01sX\x01\x00\x00\x00tq\x04h\x02u.";

    #[test]
    fn a_dictionary_stored_twice_is_full_under_both_keys() {
        let found = load(SHARED, |v| {
            ["e", "t"].map(|key| v.get(key).and_then(|d| d.get("a")).and_then(|x| x.as_int()))
        })
        .unwrap();
        assert_eq!(found, [Some(1), Some(1)]);
    }

    #[test]
    fn lying_lengths_and_garbage_are_errors_not_panics() {
        for bad in [
            &b"\x80\x02X\xff\xff\xff\xff"[..], // 4 GiB string announced
            b"\x80\x02\x8d\xff\xff\xff\xff\xff\xff\xff\xff", // 16 EiB string
            b"\x80\x02h\x05.",                 // memo never stored
            b"\x80\x02u.",                     // no mark
            b"\x80\x02}K\x01s.",               // setitem without a value pair
            b"\x80\x09.",                      // protocol 9
            b"",
        ] {
            let err = load(bad, |_| ()).unwrap_err();
            assert!(!err.reason.is_empty());
        }
        // Nesting is bounded: 100 nested empty tuples via TUPLE1.
        let mut deep = b"\x80\x02)".to_vec();
        deep.extend(std::iter::repeat_n(0x85u8, 100));
        deep.push(b'.');
        assert!(load(&deep, |_| ())
            .unwrap_err()
            .reason
            .contains("nested deeper"));
        // Nesting through the memo is unbounded at build time, so the graph
        // is taken apart without recursion: 200,000 lists, each appended
        // into the one before, and a list that contains itself.
        let mut chain = b"\x80\x02]r\x00\x00\x00\x00".to_vec();
        for i in 1..200_000u32 {
            chain.extend(b"j");
            chain.extend((i - 1).to_le_bytes());
            chain.extend(b"]r");
            chain.extend(i.to_le_bytes());
            chain.extend(b"a0");
        }
        chain.extend(b"]q\x00h\x00a.");
        assert!(load(&chain, |_| ()).is_ok());
    }
}
