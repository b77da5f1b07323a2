//! A small, defensive unpickler for the opcodes `torch.save` emits (protocol 2, plus the few
//! protocol 3-5 opcodes a newer pickler may use).
//!
//! It builds a plain value tree and calls nothing: `GLOBAL` becomes a name, `REDUCE`/`NEWOBJ` an
//! [`Value::Object`] that [`crate::torch_file`] interprets (`_rebuild_tensor_v2`, `OrderedDict`).
//! Memo entries are snapshots: a container fetched from the memo after it was filled comes
//! back as it was when memoised. State dicts never refer back to a filled container (shared
//! tensors are memoised complete), and snapshots keep the value tree free of shared mutation.
//!
//! Malformed input is an `Err`, never a panic: every read is bounds-checked, nesting is capped so
//! dropping a value cannot overflow the stack, and memo copies are charged against a budget so a
//! hostile file cannot make it allocate without bound.

use std::collections::HashMap;

/// A Python value as far as a state dict needs it.
#[derive(Debug, Clone, PartialEq)]
pub enum Value {
    None,
    Bool(bool),
    Int(i64),
    /// An integer too wide for i64, as little-endian two's complement bytes.
    BigInt(Vec<u8>),
    Float(f64),
    Str(String),
    /// Shared: the memo and `DUP` copy a reference, not the payload (a network pickle memoises
    /// every tensor's bytes several times over).
    Bytes(std::sync::Arc<[u8]>),
    List(Vec<Value>),
    Tuple(Vec<Value>),
    Dict(Vec<(Value, Value)>),
    /// `module.name` of a class or function.
    Global(String, String),
    /// `callable(*args)`, with the state given by `BUILD` if any.
    Object {
        callable: Box<Value>,
        args: Box<Value>,
        state: Option<Box<Value>>,
    },
    /// A persistent id (torch: a storage reference); the loader resolves it.
    Persistent(Box<Value>),
}

/// Deepest nesting accepted; state dicts need fewer than ten levels.
const MAX_DEPTH: usize = 200;
/// What memo gets, memo puts and `DUP` may copy in total, in bytes (an estimate: 48 per value
/// plus the contents of strings and byte strings): 64 MiB plus 16 times the pickle's own size.
/// State dicts copy next to nothing; a memo bomb copies one large value many times, and is
/// refused before it allocates more than this.
fn copy_budget(pickle_len: usize) -> usize {
    (64 << 20) + pickle_len.saturating_mul(16)
}

impl Value {
    /// Nesting depth, stopping early once it passes `limit`.
    fn depth(&self, limit: usize) -> usize {
        if limit == 0 {
            return 1;
        }
        let children = |it: &mut dyn Iterator<Item = &Value>| {
            1 + it.map(|v| v.depth(limit - 1)).max().unwrap_or(0)
        };
        match self {
            Value::List(v) | Value::Tuple(v) => children(&mut v.iter()),
            Value::Dict(kv) => children(&mut kv.iter().flat_map(|(k, v)| [k, v])),
            Value::Object {
                callable,
                args,
                state,
            } => children(
                &mut [Some(&**callable), Some(&**args), state.as_deref()]
                    .into_iter()
                    .flatten(),
            ),
            Value::Persistent(v) => 1 + v.depth(limit - 1),
            _ => 0,
        }
    }

    /// Bytes a copy of this value allocates (about), to charge copies against the budget.
    fn weight(&self) -> usize {
        const NODE: usize = 48;
        match self {
            Value::List(v) | Value::Tuple(v) => NODE + v.iter().map(Value::weight).sum::<usize>(),
            Value::Dict(kv) => {
                NODE + kv
                    .iter()
                    .map(|(k, v)| k.weight() + v.weight())
                    .sum::<usize>()
            }
            Value::Object {
                callable,
                args,
                state,
            } => {
                NODE + callable.weight() + args.weight() + state.as_ref().map_or(0, |s| s.weight())
            }
            Value::Persistent(v) => NODE + v.weight(),
            Value::Str(s) => NODE + s.len(),
            Value::BigInt(b) => NODE + b.len(),
            // Copies share the payload.
            Value::Bytes(_) => NODE,
            _ => NODE,
        }
    }

    pub fn as_str(&self) -> Option<&str> {
        match self {
            Value::Str(s) => Some(s),
            _ => None,
        }
    }

    pub fn as_int(&self) -> Option<i64> {
        match self {
            Value::Int(i) => Some(*i),
            Value::Bool(b) => Some(*b as i64),
            _ => None,
        }
    }

    /// Items of a tuple or list.
    pub fn as_seq(&self) -> Option<&[Value]> {
        match self {
            Value::Tuple(v) | Value::List(v) => Some(v),
            _ => None,
        }
    }
}

/// A stack slot: a value or a MARK.
#[derive(Debug)]
enum Slot {
    Mark,
    Val(Value),
}

/// Reads one pickle from `data[*pos..]`, leaving `*pos` just after its STOP opcode.
pub fn load(data: &[u8], pos: &mut usize) -> Result<Value, String> {
    let mut m = Machine {
        data,
        pos: *pos,
        stack: Vec::new(),
        memo: HashMap::new(),
        budget: copy_budget(data.len().saturating_sub(*pos)),
    };
    let v = m.run()?;
    *pos = m.pos;
    Ok(v)
}

struct Machine<'a> {
    data: &'a [u8],
    pos: usize,
    stack: Vec<Slot>,
    memo: HashMap<u32, Value>,
    budget: usize,
}

impl Machine<'_> {
    fn take(&mut self, n: usize) -> Result<&[u8], String> {
        let end = self
            .pos
            .checked_add(n)
            .filter(|&e| e <= self.data.len())
            .ok_or_else(|| {
                format!(
                    "truncated pickle: needs {n} bytes at offset {}, file has {}",
                    self.pos,
                    self.data.len()
                )
            })?;
        let s = &self.data[self.pos..end];
        self.pos = end;
        Ok(s)
    }

    fn byte(&mut self) -> Result<u8, String> {
        Ok(self.take(1)?[0])
    }

    fn u16(&mut self) -> Result<u16, String> {
        let b = self.take(2)?;
        Ok(u16::from_le_bytes([b[0], b[1]]))
    }

    fn u32(&mut self) -> Result<u32, String> {
        let b = self.take(4)?;
        Ok(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }

    fn u64(&mut self) -> Result<u64, String> {
        let b = self.take(8)?;
        let mut a = [0u8; 8];
        a.copy_from_slice(b);
        Ok(u64::from_le_bytes(a))
    }

    fn line(&mut self) -> Result<String, String> {
        let rest = &self.data[self.pos.min(self.data.len())..];
        let n = rest
            .iter()
            .position(|&b| b == b'\n')
            .ok_or("truncated pickle: unterminated text line")?;
        let s = String::from_utf8_lossy(&rest[..n]).into_owned();
        self.pos += n + 1;
        Ok(s)
    }

    fn len(&mut self, n: u64) -> Result<usize, String> {
        let n = usize::try_from(n).map_err(|_| format!("pickle length {n} is too large"))?;
        if n > self.data.len().saturating_sub(self.pos) {
            return Err(format!(
                "truncated pickle: a {n}-byte item at offset {} runs past the end ({} bytes)",
                self.pos,
                self.data.len()
            ));
        }
        Ok(n)
    }

    fn string(&mut self, n: u64) -> Result<Value, String> {
        let n = self.len(n)?;
        let b = self.take(n)?;
        String::from_utf8(b.to_vec())
            .map(Value::Str)
            .map_err(|_| "pickle string is not UTF-8".to_string())
    }

    fn bytes(&mut self, n: u64) -> Result<Value, String> {
        let n = self.len(n)?;
        Ok(Value::Bytes(std::sync::Arc::from(self.take(n)?)))
    }

    fn push(&mut self, v: Value) -> Result<(), String> {
        if v.depth(MAX_DEPTH) > MAX_DEPTH {
            return Err(format!("pickle nests deeper than {MAX_DEPTH} levels"));
        }
        self.stack.push(Slot::Val(v));
        Ok(())
    }

    fn pop(&mut self) -> Result<Value, String> {
        match self.stack.pop() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Mark) => Err("pickle: unexpected MARK on the stack".into()),
            None => Err("pickle: stack underflow".into()),
        }
    }

    fn top(&mut self) -> Result<&mut Value, String> {
        match self.stack.last_mut() {
            Some(Slot::Val(v)) => Ok(v),
            Some(Slot::Mark) => Err("pickle: unexpected MARK on the stack".into()),
            None => Err("pickle: stack underflow".into()),
        }
    }

    /// Pops everything above the last MARK, and the MARK.
    fn pop_mark(&mut self) -> Result<Vec<Value>, String> {
        let at = self
            .stack
            .iter()
            .rposition(|s| matches!(s, Slot::Mark))
            .ok_or("pickle: no MARK on the stack")?;
        let items = self.stack.split_off(at + 1);
        self.stack.pop();
        Ok(items
            .into_iter()
            .map(|s| match s {
                Slot::Val(v) => v,
                Slot::Mark => unreachable!("rposition found the last mark"),
            })
            .collect())
    }

    fn copy(&mut self, v: &Value) -> Result<Value, String> {
        self.charge(v)?;
        Ok(v.clone())
    }

    fn charge(&mut self, v: &Value) -> Result<(), String> {
        self.budget = self.budget.checked_sub(v.weight()).ok_or(
            "pickle copies more than the input's size allows (64 MiB + 16x its size; a memo bomb?)",
        )?;
        Ok(())
    }

    fn memo_put(&mut self, key: u32) -> Result<(), String> {
        let v = match self.stack.last() {
            Some(Slot::Val(v)) => v.clone(),
            _ => return Err("pickle: PUT with nothing to store".into()),
        };
        self.charge(&v)?;
        self.memo.insert(key, v);
        Ok(())
    }

    fn memo_get(&mut self, key: u32) -> Result<(), String> {
        let v = self
            .memo
            .get(&key)
            .ok_or_else(|| format!("pickle: memo key {key} is not defined"))?
            .clone();
        let v = self.copy(&v)?;
        self.push(v)
    }

    fn extend_list(&mut self, items: Vec<Value>) -> Result<(), String> {
        let depth = items.iter().map(|v| v.depth(MAX_DEPTH)).max().unwrap_or(0);
        if depth >= MAX_DEPTH {
            return Err(format!("pickle nests deeper than {MAX_DEPTH} levels"));
        }
        match self.top()? {
            Value::List(l) => {
                l.extend(items);
                Ok(())
            }
            other => Err(format!("pickle: APPEND to a non-list ({})", kind(other))),
        }
    }

    fn set_items(&mut self, items: Vec<Value>) -> Result<(), String> {
        if !items.len().is_multiple_of(2) {
            return Err("pickle: SETITEMS with an odd number of items".into());
        }
        let depth = items.iter().map(|v| v.depth(MAX_DEPTH)).max().unwrap_or(0);
        if depth >= MAX_DEPTH {
            return Err(format!("pickle nests deeper than {MAX_DEPTH} levels"));
        }
        let top = self.top()?;
        // A dict subclass (stylegan2-ada's `dnnlib.EasyDict` kwargs) pickles as `NEWOBJ cls()`
        // followed by SETITEMS: its items are what matters, so it becomes a plain dict.
        if let Value::Object {
            args, state: None, ..
        } = top
        {
            if args.as_seq().is_some_and(<[Value]>::is_empty) {
                *top = Value::Dict(Vec::new());
            }
        }
        match top {
            Value::Dict(d) => {
                let mut it = items.into_iter();
                while let (Some(k), Some(v)) = (it.next(), it.next()) {
                    // Python semantics: a repeated key replaces the value.
                    if let Some(slot) = d.iter_mut().find(|(dk, _)| *dk == k) {
                        slot.1 = v;
                    } else {
                        d.push((k, v));
                    }
                }
                Ok(())
            }
            other => Err(format!("pickle: SETITEM on a non-dict ({})", kind(other))),
        }
    }

    fn reduce(&mut self, callable: Value, args: Value) -> Result<Value, String> {
        // An empty OrderedDict (state dicts, backward-hook slots) is filled by SETITEMS later.
        if let Value::Global(m, n) = &callable {
            if m == "collections" && n == "OrderedDict" {
                return match args.as_seq() {
                    Some([]) => Ok(Value::Dict(Vec::new())),
                    Some([Value::List(pairs)]) if pairs.is_empty() => Ok(Value::Dict(Vec::new())),
                    _ => Err("pickle: OrderedDict with positional items is not supported".into()),
                };
            }
        }
        Ok(Value::Object {
            callable: Box::new(callable),
            args: Box::new(args),
            state: None,
        })
    }

    fn run(&mut self) -> Result<Value, String> {
        loop {
            let op = self.byte()?;
            match op {
                0x80 => {
                    let proto = self.byte()?;
                    if proto > 5 {
                        return Err(format!("unsupported pickle protocol {proto}"));
                    }
                }
                0x95 => {
                    self.u64()?; // FRAME: only a read-ahead hint
                }
                b'.' => {
                    let v = self.pop()?;
                    return Ok(v);
                }
                b'(' => self.stack.push(Slot::Mark),
                b'0' => {
                    self.stack.pop().ok_or("pickle: POP on an empty stack")?;
                }
                b'1' => {
                    self.pop_mark()?;
                }
                b'2' => {
                    let v = self.top()?.clone();
                    let v = self.copy(&v)?;
                    self.push(v)?;
                }
                b'N' => self.push(Value::None)?,
                0x88 => self.push(Value::Bool(true))?,
                0x89 => self.push(Value::Bool(false))?,
                b'J' => {
                    let v = self.u32()? as i32;
                    self.push(Value::Int(v as i64))?
                }
                b'K' => {
                    let v = self.byte()?;
                    self.push(Value::Int(v as i64))?
                }
                b'M' => {
                    let v = self.u16()?;
                    self.push(Value::Int(v as i64))?
                }
                b'I' | b'L' => {
                    let line = self.line()?;
                    let t = line.trim_end_matches('L');
                    let v = match t {
                        "00" => Value::Bool(false),
                        "01" => Value::Bool(true),
                        _ => Value::Int(
                            t.parse::<i64>()
                                .map_err(|_| format!("pickle: bad integer literal {line:?}"))?,
                        ),
                    };
                    self.push(v)?
                }
                0x8a | 0x8b => {
                    let n = if op == 0x8a {
                        self.byte()? as u64
                    } else {
                        self.u32()? as u64
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?.to_vec();
                    self.push(long_value(b))?
                }
                b'G' => {
                    let b = self.take(8)?;
                    let mut a = [0u8; 8];
                    a.copy_from_slice(b);
                    self.push(Value::Float(f64::from_be_bytes(a)))?
                }
                b'F' => {
                    let line = self.line()?;
                    let v = line
                        .trim()
                        .parse::<f64>()
                        .map_err(|_| format!("pickle: bad float literal {line:?}"))?;
                    self.push(Value::Float(v))?
                }
                b'X' => {
                    let n = self.u32()? as u64;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8c => {
                    let n = self.byte()? as u64;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                0x8d => {
                    let n = self.u64()?;
                    let v = self.string(n)?;
                    self.push(v)?
                }
                // Python 2 `str`: bytes that are text in practice (keys of old checkpoints).
                b'T' | b'U' => {
                    let n = if op == b'T' {
                        let n = self.u32()? as i32;
                        u64::try_from(n).map_err(|_| "pickle: negative string length")?
                    } else {
                        self.byte()? as u64
                    };
                    let n = self.len(n)?;
                    let b = self.take(n)?;
                    let v = Value::Str(b.iter().map(|&c| c as char).collect());
                    self.push(v)?
                }
                b'B' => {
                    let n = self.u32()? as u64;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                b'C' => {
                    let n = self.byte()? as u64;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                0x8e | 0x96 => {
                    let n = self.u64()?;
                    let v = self.bytes(n)?;
                    self.push(v)?
                }
                b']' => self.push(Value::List(Vec::new()))?,
                b'l' => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'a' => {
                    let v = self.pop()?;
                    self.extend_list(vec![v])?
                }
                b'e' => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                b')' => self.push(Value::Tuple(Vec::new()))?,
                b't' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Tuple(items))?
                }
                0x85..=0x87 => {
                    let n = (op - 0x84) as usize;
                    if self.stack.len() < n {
                        return Err("pickle: stack underflow in TUPLEn".into());
                    }
                    let mut items = Vec::with_capacity(n);
                    for _ in 0..n {
                        items.push(self.pop()?);
                    }
                    items.reverse();
                    self.push(Value::Tuple(items))?
                }
                b'}' => self.push(Value::Dict(Vec::new()))?,
                b'd' => {
                    let items = self.pop_mark()?;
                    self.push(Value::Dict(Vec::new()))?;
                    self.set_items(items)?
                }
                b's' => {
                    let v = self.pop()?;
                    let k = self.pop()?;
                    self.set_items(vec![k, v])?
                }
                b'u' => {
                    let items = self.pop_mark()?;
                    self.set_items(items)?
                }
                // Sets only appear in exotic checkpoints; keep them as lists.
                0x8f => self.push(Value::List(Vec::new()))?,
                0x90 => {
                    let items = self.pop_mark()?;
                    self.extend_list(items)?
                }
                0x91 => {
                    let items = self.pop_mark()?;
                    self.push(Value::List(items))?
                }
                b'c' => {
                    let module = self.line()?;
                    let name = self.line()?;
                    self.push(Value::Global(module, name))?
                }
                0x93 => {
                    let name = self.pop()?;
                    let module = self.pop()?;
                    match (module, name) {
                        (Value::Str(m), Value::Str(n)) => self.push(Value::Global(m, n))?,
                        _ => return Err("pickle: STACK_GLOBAL needs two strings".into()),
                    }
                }
                b'R' | 0x81 => {
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?
                }
                0x92 => {
                    let _kwargs = self.pop()?;
                    let args = self.pop()?;
                    let callable = self.pop()?;
                    let v = self.reduce(callable, args)?;
                    self.push(v)?
                }
                b'b' => {
                    let st = self.pop()?;
                    if st.depth(MAX_DEPTH) >= MAX_DEPTH {
                        return Err(format!("pickle nests deeper than {MAX_DEPTH} levels"));
                    }
                    match self.top()? {
                        // OrderedDict state (`_metadata` of a state dict) is not needed.
                        Value::Dict(_) => {}
                        Value::Object { state, .. } => *state = Some(Box::new(st)),
                        other => {
                            return Err(format!("pickle: BUILD on a {}", kind(other)));
                        }
                    }
                }
                b'Q' => {
                    let pid = self.pop()?;
                    self.push(Value::Persistent(Box::new(pid)))?
                }
                b'P' => {
                    let line = self.line()?;
                    self.push(Value::Persistent(Box::new(Value::Str(line))))?
                }
                b'q' => {
                    let k = self.byte()? as u32;
                    self.memo_put(k)?
                }
                b'r' => {
                    let k = self.u32()?;
                    self.memo_put(k)?
                }
                b'p' => {
                    let line = self.line()?;
                    let k = line
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| format!("pickle: bad PUT key {line:?}"))?;
                    self.memo_put(k)?
                }
                0x94 => {
                    let k = u32::try_from(self.memo.len()).map_err(|_| "pickle: memo overflow")?;
                    self.memo_put(k)?
                }
                b'h' => {
                    let k = self.byte()? as u32;
                    self.memo_get(k)?
                }
                b'j' => {
                    let k = self.u32()?;
                    self.memo_get(k)?
                }
                b'g' => {
                    let line = self.line()?;
                    let k = line
                        .trim()
                        .parse::<u32>()
                        .map_err(|_| format!("pickle: bad GET key {line:?}"))?;
                    self.memo_get(k)?
                }
                other => {
                    return Err(format!(
                        "unsupported pickle opcode 0x{other:02x} at offset {}",
                        self.pos - 1
                    ))
                }
            }
        }
    }
}

fn kind(v: &Value) -> &'static str {
    match v {
        Value::None => "None",
        Value::Bool(_) => "bool",
        Value::Int(_) | Value::BigInt(_) => "int",
        Value::Float(_) => "float",
        Value::Str(_) => "str",
        Value::Bytes(_) => "bytes",
        Value::List(_) => "list",
        Value::Tuple(_) => "tuple",
        Value::Dict(_) => "dict",
        Value::Global(..) => "global",
        Value::Object { .. } => "object",
        Value::Persistent(_) => "persistent id",
    }
}

/// LONG1/LONG4 payload: little-endian two's complement of any width.
fn long_value(b: Vec<u8>) -> Value {
    if b.is_empty() {
        return Value::Int(0);
    }
    if b.len() <= 8 {
        let neg = b[b.len() - 1] & 0x80 != 0;
        let mut a = [if neg { 0xff } else { 0 }; 8];
        a[..b.len()].copy_from_slice(&b);
        return Value::Int(i64::from_le_bytes(a));
    }
    Value::BigInt(b)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load_all(b: &[u8]) -> Result<Value, String> {
        let mut pos = 0;
        let v = load(b, &mut pos)?;
        assert_eq!(pos, b.len());
        Ok(v)
    }

    #[test]
    fn ordered_dict_with_memo_and_tensor_like_reduce() {
        // pickle.dumps(OrderedDict(a=(1, -2, 'x')), protocol=2), hand-assembled.
        let mut b = vec![0x80, 2, b'c'];
        b.extend_from_slice(b"collections\nOrderedDict\n");
        b.extend_from_slice(&[b'q', 0, b')', b'R', b'q', 1]);
        b.extend_from_slice(&[b'(', b'X', 1, 0, 0, 0, b'a']);
        b.extend_from_slice(&[b'K', 1, b'J']);
        b.extend_from_slice(&(-2i32).to_le_bytes());
        b.extend_from_slice(&[0x8c, 1, b'x', 0x87, b'u', b'h', 1, 0x86, b'.']);
        let v = load_all(&b).unwrap();
        let Value::Tuple(t) = v else { panic!("{v:?}") };
        let expect = Value::Dict(vec![(
            Value::Str("a".into()),
            Value::Tuple(vec![Value::Int(1), Value::Int(-2), Value::Str("x".into())]),
        )]);
        assert_eq!(t[0], expect);
        // The memo holds the dict as it was when memoised (empty): a snapshot.
        assert_eq!(t[1], Value::Dict(vec![]));
    }

    #[test]
    fn long1_decodes_small_and_wide_integers() {
        assert_eq!(long_value(vec![0xe9, 0x03]), Value::Int(1001));
        assert_eq!(long_value(vec![0xff]), Value::Int(-1));
        let magic = vec![0x6c, 0xfc, 0x9c, 0x46, 0xf9, 0x20, 0x6a, 0xa8, 0x50, 0x19];
        assert_eq!(long_value(magic.clone()), Value::BigInt(magic));
    }

    #[test]
    fn malformed_input_is_an_error_not_a_panic() {
        for bad in [
            &b""[..],
            &[0x80, 2][..],
            &[b'X', 0xff, 0xff, 0xff, 0x7f, b'a'][..],
            &[b'h', 3, b'.'][..],
            &[b'u', b'.'][..],
            &[b'a', b'.'][..],
            &[0x86, b'.'][..],
            &[b'K', 1, b'(', b'.'][..],
            &[0xfe][..],
        ] {
            assert!(load_all(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn deep_nesting_is_refused() {
        let mut b = vec![b')'];
        b.extend(std::iter::repeat_n(0x85, 100_000));
        b.push(b'.');
        let e = load_all(&b).unwrap_err();
        assert!(e.contains("deeper"), "{e}");
    }

    #[test]
    fn memo_bombs_are_refused() {
        // A list of 10k ints, then DUP + APPEND doubling it 40 times.
        let mut b = vec![b']', b'('];
        for _ in 0..10_000 {
            b.extend_from_slice(&[b'K', 1]);
        }
        b.push(b'e');
        b.extend_from_slice(&[b'q', 0]);
        for _ in 0..40_000 {
            b.extend_from_slice(&[b'h', 0, b'0']);
        }
        b.push(b'.');
        let e = load_all(&b).unwrap_err();
        assert!(e.contains("memo bomb"), "{e}");
    }

    /// issue 19: one 8 MiB string fetched from the memo 2,000 times (16 GB of copies from an
    /// 8 MB pickle) is refused once the copies pass 64 MiB + 16x the input, before they are made.
    #[test]
    fn issue_19_large_values_copied_from_the_memo_are_charged_by_size() {
        let big = 8 << 20;
        let mut b = vec![0x80, 2, b'X'];
        b.extend_from_slice(&(big as u32).to_le_bytes());
        b.extend(std::iter::repeat_n(b'a', big));
        b.extend_from_slice(&[b'q', 0, b']', b'(']);
        for _ in 0..2000 {
            b.extend_from_slice(&[b'h', 0]);
        }
        b.extend_from_slice(b"e.");
        let e = load_all(&b).unwrap_err();
        assert!(e.contains("memo bomb"), "{e}");
    }
}
