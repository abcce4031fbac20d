//! The shared many-rule matcher.
//!
//! ## Design
//! * **Compile.** Every rule's patterns are expanded into conjunctions ("sub-rules") of
//!   predicates. All predicates of all rules are entered into one [`Compiled`] snapshot: a trie
//!   of the field paths rules reference (per-node child lookup by raw key bytes) and, at each
//!   referenced leaf path, one value index (`FieldIndex` in `index.rs`: hash maps for exact
//!   strings / canonical numbers / folded strings, byte tries for prefixes and suffixes, short
//!   lists for ranges, CIDR and wildcards).
//! * **Prefilter.** Before scanning, a vectorised search for the rules' leaf keys checks
//!   whether any value under them could satisfy any condition at all; if none can, no rule
//!   matches and the scan is skipped (see `prefilter.rs` for when this is sound and when it is
//!   switched off).
//! * **Scan.** Matching streams over the event bytes once. Keys not in the path trie are
//!   skipped without being parsed (a bracket/string-aware skip), so the cost grows with the part
//!   of the event that rules look at, not with the number of rules. Each leaf value at a
//!   referenced path is looked up in its field index, yielding the predicates it satisfies,
//!   together with the value's array *trail* (see [`crate::eval`]).
//! * **Decide.** A sub-rule with a single positive predicate and no `exists: false` matches as
//!   soon as its predicate is satisfied. Other sub-rules count distinct satisfied predicates;
//!   once all are satisfied (and for sub-rules made only of `exists: false`, always) the
//!   array-consistency search of [`crate::eval`] decides on the recorded trails.
//! * **Concurrency.** A [`Matcher`] keeps rule definitions behind a mutex (writers only) and
//!   publishes an immutable [`Compiled`] snapshot through `arc-swap`: readers load the current
//!   snapshot without locking and never wait for a writer, which rebuilds a new snapshot and
//!   swaps it in. A rebuild costs time linear in the number of rules; add rules in batches with
//!   [`Matcher::add_patterns`] when loading many.

use crate::error::{EventError, PatternError};
use crate::eval::{Span, Step, search};
use crate::index::{FieldIndex, NEG_BIT};
use crate::json::{self, Res, err};
use crate::pattern::{Limits, Pattern, PredicateKind};
use crate::prefilter::Prefilter;
use ahash::RandomState;
use arc_swap::ArcSwap;
use std::cell::RefCell;
use std::collections::HashMap;
use std::hash::Hash;
use std::sync::{Arc, Mutex};

const NONE: u32 = u32::MAX;

/// One child of a path node in the short (linear) form.
#[derive(Debug, Clone)]
struct KeyEntry {
    /// [`json::key_head`] of the key.
    head: u64,
    len: usize,
    node: u32,
    key: Box<[u8]>,
}

/// Child lookup by raw key bytes; yields (node, ordinal among siblings).
#[derive(Debug, Clone)]
enum Children {
    /// Few children: compared by (length, first eight bytes), then the rest.
    Small(Vec<KeyEntry>),
    Map(HashMap<Box<[u8]>, (u32, u32), RandomState>),
}

impl Children {
    /// `head` is [`json::key_head`] of `key`.
    #[inline(always)]
    fn get(&self, key: &[u8], head: u64) -> Option<(u32, u32)> {
        match self {
            Children::Small(v) => {
                for (p, e) in v.iter().enumerate() {
                    if e.head == head
                        && e.len == key.len()
                        && (e.len <= 8 || e.key[8..] == key[8..])
                    {
                        return Some((e.node, p as u32));
                    }
                }
                None
            }
            Children::Map(m) => m.get(key).copied(),
        }
    }

    fn len(&self) -> usize {
        match self {
            Children::Small(v) => v.len(),
            Children::Map(m) => m.len(),
        }
    }
}

#[derive(Debug, Clone)]
struct PathNode {
    children: Children,
    /// Index into `fields`, or NONE.
    field: u32,
    /// Presence-tracking slot for `exists: false`, or NONE.
    absent_slot: u32,
}

#[derive(Debug, Clone, Default)]
struct PredInfo {
    /// Rules that match as soon as this predicate is satisfied.
    direct_rules: Vec<u32>,
    /// Sub-rules that need this predicate among others.
    complex: Vec<u32>,
}

#[derive(Debug, Clone)]
struct SubRule {
    rule: u32,
    pos: Vec<u32>,
    absent: Vec<u32>,
}

/// An immutable compiled rule set: what readers match against.
#[derive(Debug)]
pub struct Compiled<Id> {
    ids: Vec<Id>,
    nodes: Vec<PathNode>,
    fields: Vec<FieldIndex>,
    preds: Vec<PredInfo>,
    subrules: Vec<SubRule>,
    always: Vec<u32>,
    absent_slots: usize,
    negs: usize,
    max_event_depth: usize,
    /// Early "no match" check (see `prefilter.rs`); `None` when some sub-rule can match
    /// without any positive predicate.
    prefilter: Option<Prefilter>,
    /// Unique per build, so a [`Scratch`] knows when it must resize.
    build_id: u64,
}

static NEXT_BUILD: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(1);

impl<Id: Clone> Compiled<Id> {
    /// Compiles rules: `(id, patterns)`; a rule matches when any of its patterns does.
    pub fn build<'p>(
        rules: impl IntoIterator<Item = (Id, &'p [Arc<Pattern>])>,
        limits: &Limits,
    ) -> Self {
        let mut c = Compiled {
            ids: Vec::new(),
            nodes: vec![PathNode {
                children: Children::Small(Vec::new()),
                field: NONE,
                absent_slot: NONE,
            }],
            fields: Vec::new(),
            preds: Vec::new(),
            subrules: Vec::new(),
            always: Vec::new(),
            absent_slots: 0,
            negs: 0,
            max_event_depth: limits.max_event_depth,
            prefilter: None,
            build_id: NEXT_BUILD.fetch_add(1, std::sync::atomic::Ordering::Relaxed),
        };
        let mut next_neg = 0u32;
        for (id, patterns) in rules {
            let rule = c.ids.len() as u32;
            c.ids.push(id);
            for p in patterns {
                for conj in &p.conjunctions {
                    let sub_id = c.subrules.len() as u32;
                    let mut sub = SubRule {
                        rule,
                        pos: Vec::new(),
                        absent: Vec::new(),
                    };
                    let n_pos = conj
                        .iter()
                        .filter(|p| matches!(p.kind, PredicateKind::Any(_)))
                        .count();
                    let simple = n_pos == 1 && conj.len() == 1;
                    for pred in conj {
                        let node = c.node_for(&pred.path);
                        match &pred.kind {
                            PredicateKind::Any(conds) => {
                                let pid = c.preds.len() as u32;
                                let mut info = PredInfo::default();
                                if simple {
                                    info.direct_rules.push(rule);
                                } else {
                                    info.complex.push(sub_id);
                                }
                                c.preds.push(info);
                                let f = c.field_for(node);
                                for cond in conds {
                                    c.fields[f].add(cond, pid, &mut next_neg);
                                }
                                sub.pos.push(pid);
                            }
                            PredicateKind::Absent => {
                                if c.nodes[node].absent_slot == NONE {
                                    c.nodes[node].absent_slot = c.absent_slots as u32;
                                    c.absent_slots += 1;
                                }
                                sub.absent.push(c.nodes[node].absent_slot);
                            }
                        }
                    }
                    if sub.pos.is_empty() {
                        c.always.push(sub_id);
                    }
                    c.subrules.push(sub);
                }
            }
        }
        c.negs = next_neg as usize;
        if c.always.is_empty() && !c.fields.is_empty() {
            let mut leaf_keys = Vec::new();
            for n in &c.nodes {
                let mut add = |key: &[u8], child: u32| {
                    let f = c.nodes[child as usize].field;
                    if f != NONE {
                        leaf_keys.push((key.to_vec(), f));
                    }
                };
                match &n.children {
                    Children::Small(v) => v.iter().for_each(|e| add(&e.key, e.node)),
                    Children::Map(m) => m.iter().for_each(|(k, &(node, _))| add(k, node)),
                }
            }
            let pf = Prefilter::new(leaf_keys);
            // One substring search per distinct key: worth it only for a few keys.
            if pf.keys() <= PREFILTER_MAX_KEYS {
                c.prefilter = Some(pf);
            }
        }
        c
    }

    fn node_for(&mut self, path: &[String]) -> usize {
        let mut at = 0usize;
        for seg in path {
            let key = seg.as_bytes();
            at = match self.nodes[at].children.get(key, json::key_head(key)) {
                Some((n, _)) => n as usize,
                None => {
                    let id = self.nodes.len() as u32;
                    self.nodes.push(PathNode {
                        children: Children::Small(Vec::new()),
                        field: NONE,
                        absent_slot: NONE,
                    });
                    match &mut self.nodes[at].children {
                        Children::Small(v) => {
                            v.push(KeyEntry {
                                head: json::key_head(key),
                                len: key.len(),
                                node: id,
                                key: key.into(),
                            });
                            if v.len() > 6 {
                                let m = v
                                    .drain(..)
                                    .enumerate()
                                    .map(|(o, e)| (e.key, (e.node, o as u32)))
                                    .collect();
                                self.nodes[at].children = Children::Map(m);
                            }
                        }
                        Children::Map(m) => {
                            let ordinal = m.len() as u32;
                            m.insert(key.into(), (id, ordinal));
                        }
                    }
                    id as usize
                }
            };
        }
        at
    }

    fn field_for(&mut self, node: usize) -> usize {
        if self.nodes[node].field == NONE {
            self.nodes[node].field = self.fields.len() as u32;
            self.fields.push(FieldIndex::default());
        }
        self.nodes[node].field as usize
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.ids.len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.ids.is_empty()
    }

    /// The id of rule number `index` (as reported by [`Compiled::match_indices`]).
    pub fn id(&self, index: u32) -> &Id {
        &self.ids[index as usize]
    }

    /// Matches one event (a JSON object as bytes); pushes the indices of matching rules to
    /// `out` (cleared first), each once, in no particular order.
    pub fn match_indices(
        &self,
        event: &[u8],
        scratch: &mut Scratch,
        out: &mut Vec<u32>,
    ) -> Result<(), EventError> {
        out.clear();
        scratch.prepare(self);
        let i = json::skip_ws(event, 0);
        if event.get(i) != Some(&b'{') {
            return err(i, "event must be a JSON object");
        }
        if let Some(pf) = &self.prefilter
            && scratch.prefilter_on()
        {
            let rejected = pf.rejects(
                event,
                &self.fields,
                &mut scratch.fold,
                &mut scratch.pf_first,
            );
            scratch.prefilter_outcome(rejected);
            if rejected {
                return Ok(());
            }
        }
        let mut sc = Scan {
            buf: event,
            stopped: false,
            c: self,
            s: scratch,
            out,
        };
        let end = sc.object(i, 0, 0, true)?;
        let end = json::skip_ws(event, end);
        if !sc.stopped && end != event.len() {
            return err(end, "trailing characters after the event");
        }
        sc.decide();
        Ok(())
    }

    /// Matches one event and returns the ids of matching rules.
    pub fn matches_for_event(
        &self,
        event: &[u8],
        scratch: &mut Scratch,
    ) -> Result<Vec<Id>, EventError> {
        let mut out = Vec::new();
        self.match_indices(event, scratch, &mut out)?;
        Ok(out.iter().map(|&r| self.ids[r as usize].clone()).collect())
    }
}

/// Per-thread working memory for matching; reuse one per thread to avoid allocation.
#[derive(Debug, Default)]
pub struct Scratch {
    built_for: u64,
    epoch: u32,
    value_gen: u32,
    rule_stamp: Vec<u32>,
    pred_stamp: Vec<u32>,
    pred_head: Vec<u32>,
    sub_stamp: Vec<u32>,
    sub_count: Vec<u32>,
    slot_stamp: Vec<u32>,
    slot_head: Vec<u32>,
    neg_stamp: Vec<u32>,
    /// Satisfaction records: (next, span).
    sats: Vec<(u32, Span)>,
    arena: Vec<Step>,
    trail: Vec<Step>,
    arrays: u32,
    cands: Vec<u32>,
    fold: Vec<u8>,
    unescaped: Vec<u8>,
    key: Vec<u8>,
    lists: Vec<Span>,
    /// Prefilter bookkeeping: attempts and rejections in the current window of
    /// `PREFILTER_WINDOW` events; events left to skip it after a window in which it rejected
    /// too few to pay for itself, and the current length of such pauses.
    pf_tries: u32,
    pf_rejects: u32,
    pf_off: u32,
    pf_pause: u32,
    /// The prefilter key that let the previous event through.
    pf_first: usize,
    /// Test hook ([`Scratch::set_prefilter`]): `Some(true)` always tries the prefilter,
    /// `Some(false)` never does; `None` (default) adapts as described above.
    pf_forced: Option<bool>,
}

/// Most distinct leaf keys for which a snapshot gets a prefilter.
const PREFILTER_MAX_KEYS: usize = 8;
/// Events per prefilter evaluation window.
const PREFILTER_WINDOW: u32 = 64;
/// Minimum rejections per window to keep the prefilter on.
const PREFILTER_MIN_REJECTS: u32 = 16;
/// Events matched without the prefilter after a poor window, before trying it again; doubled
/// after each further poor window, up to `PREFILTER_MAX_PAUSE`.
const PREFILTER_PAUSE: u32 = 1024;
const PREFILTER_MAX_PAUSE: u32 = 1 << 16;

impl Scratch {
    /// Fresh scratch space.
    pub fn new() -> Self {
        Self::default()
    }

    /// Testing aid: `Some(true)` runs the prefilter on every event, `Some(false)` never (the
    /// full scan alone), `None` restores the adaptive default. Verdicts must not depend on it.
    #[doc(hidden)]
    pub fn set_prefilter(&mut self, forced: Option<bool>) {
        self.pf_forced = forced;
    }

    #[inline]
    fn prefilter_on(&mut self) -> bool {
        if let Some(on) = self.pf_forced {
            return on;
        }
        if self.pf_off > 0 {
            self.pf_off -= 1;
            false
        } else {
            true
        }
    }

    #[inline]
    fn prefilter_outcome(&mut self, rejected: bool) {
        self.pf_tries += 1;
        self.pf_rejects += u32::from(rejected);
        if self.pf_tries == PREFILTER_WINDOW {
            if self.pf_rejects < PREFILTER_MIN_REJECTS {
                // Back off exponentially while it keeps not paying.
                self.pf_pause = (self.pf_pause * 2).clamp(PREFILTER_PAUSE, PREFILTER_MAX_PAUSE);
                self.pf_off = self.pf_pause;
            } else {
                self.pf_pause = 0;
            }
            self.pf_tries = 0;
            self.pf_rejects = 0;
        }
    }

    fn prepare<Id>(&mut self, c: &Compiled<Id>) {
        fn fit(v: &mut Vec<u32>, n: usize) -> bool {
            if v.len() != n {
                v.clear();
                v.resize(n, 0);
                true
            } else {
                false
            }
        }
        let mut reset = false;
        if self.built_for != c.build_id {
            self.built_for = c.build_id;
            self.pf_tries = 0;
            self.pf_rejects = 0;
            self.pf_off = 0;
            self.pf_first = 0;
            self.pf_pause = 0;
            reset |= fit(&mut self.rule_stamp, c.ids.len());
            reset |= fit(&mut self.pred_stamp, c.preds.len());
            reset |= fit(&mut self.sub_stamp, c.subrules.len());
            reset |= fit(&mut self.slot_stamp, c.absent_slots);
            reset |= fit(&mut self.neg_stamp, c.negs);
            fit(&mut self.pred_head, c.preds.len());
            fit(&mut self.sub_count, c.subrules.len());
            fit(&mut self.slot_head, c.absent_slots);
        }
        self.epoch = self.epoch.wrapping_add(1);
        if reset || self.epoch == 0 || self.value_gen > u32::MAX - (1 << 20) {
            for v in [
                &mut self.rule_stamp,
                &mut self.pred_stamp,
                &mut self.sub_stamp,
                &mut self.slot_stamp,
                &mut self.neg_stamp,
            ] {
                v.iter_mut().for_each(|x| *x = 0);
            }
            self.epoch = 1;
            self.value_gen = 0;
        }
        self.sats.clear();
        self.arena.clear();
        self.trail.clear();
        self.cands.clear();
        self.arrays = 0;
    }
}

struct Scan<'a, 'c, Id> {
    buf: &'a [u8],
    stopped: bool,
    c: &'c Compiled<Id>,
    s: &'c mut Scratch,
    out: &'c mut Vec<u32>,
}

enum Val<'a> {
    Str(&'a [u8], bool),
    Num(&'a [u8]),
    Lit(Option<bool>),
}

impl<Id> Scan<'_, '_, Id> {
    /// `i` at `{`; returns the index after the matching `}`.
    ///
    /// Each referenced key counts at its first occurrence only; once every key the rules
    /// reference under `node` has been seen, the rest of the object is skipped. `can_stop` says
    /// that nothing after this object can matter (every enclosing object has seen all its
    /// referenced keys and no enclosing array is open): then the scan ends right here
    /// (`self.stopped`) without reading the rest of the event.
    fn object(&mut self, mut i: usize, node: usize, depth: usize, can_stop: bool) -> Res<usize> {
        if depth > self.c.max_event_depth {
            return err(i, "event nests too deeply");
        }
        let buf = self.buf;
        let children = &self.c.nodes[node].children;
        let wanted = children.len();
        // Keys seen so far, by ordinal: one word inline, more only for wide nodes.
        let mut seen_lo = 0u64;
        let mut seen_hi: smallvec::SmallVec<[u64; 0]> = smallvec::SmallVec::new();
        if wanted > 64 {
            seen_hi.resize((wanted - 64).div_ceil(64), 0);
        }
        let mut found = 0usize;
        i = json::skip_ws(buf, i + 1);
        if buf.get(i) == Some(&b'}') {
            return Ok(i + 1);
        }
        loop {
            if buf.get(i) != Some(&b'"') {
                return err(i, "expected a key");
            }
            let (kend, escaped, head) = json::key_end(buf, i + 1)?;
            let child = if escaped {
                let mut key = std::mem::take(&mut self.s.key);
                json::unescape(&buf[i + 1..kend], i + 1, &mut key)?;
                let c = children.get(&key, json::key_head(&key));
                self.s.key = key;
                c
            } else {
                children.get(&buf[i + 1..kend], head)
            };
            i = kend + 1;
            if buf.get(i) != Some(&b':') {
                i = json::skip_ws(buf, i);
                if buf.get(i) != Some(&b':') {
                    return err(i, "expected ':'");
                }
            }
            i = json::skip_ws(buf, i + 1);
            let child = child.filter(|&(_, ord)| {
                let ord = ord as usize;
                let (w, bit) = if ord < 64 {
                    (&mut seen_lo, 1u64 << ord)
                } else {
                    (&mut seen_hi[(ord - 64) / 64], 1u64 << (ord % 64))
                };
                let first = *w & bit == 0;
                *w |= bit;
                first
            });
            i = match child {
                None => json::skip_value(buf, i)?,
                Some((ch, _)) => {
                    found += 1;
                    let e = self.value(i, ch as usize, depth + 1, can_stop && found == wanted)?;
                    if self.stopped {
                        return Ok(e);
                    }
                    e
                }
            };
            let more = match buf.get(i) {
                Some(b',') => true,
                Some(b'}') => return Ok(i + 1),
                _ => {
                    i = json::skip_ws(buf, i);
                    match buf.get(i) {
                        Some(b',') => true,
                        Some(b'}') => return Ok(i + 1),
                        _ => return err(i, "expected ',' or '}'"),
                    }
                }
            };
            if more && found == wanted {
                if can_stop {
                    self.stopped = true;
                    return Ok(buf.len());
                }
                return json::skip_rest(buf, i);
            }
            i += 1;
            if buf.get(i) != Some(&b'"') {
                i = json::skip_ws(buf, i);
            }
        }
    }

    fn value(&mut self, i: usize, node: usize, depth: usize, can_stop: bool) -> Res<usize> {
        let buf = self.buf;
        let (end, val) = match buf.get(i) {
            Some(b'{') => {
                let has_children = match &self.c.nodes[node].children {
                    Children::Small(v) => !v.is_empty(),
                    Children::Map(_) => true,
                };
                return if has_children {
                    self.object(i, node, depth, can_stop)
                } else {
                    json::skip_container(buf, i)
                };
            }
            Some(b'[') => return self.array(i, node, depth),
            Some(b'"') => {
                let (e, esc) = json::string_end(buf, i + 1)?;
                (e + 1, Val::Str(&buf[i + 1..e], esc))
            }
            Some(b't') => (json::literal_end(buf, i, b"true")?, Val::Lit(Some(true))),
            Some(b'f') => (json::literal_end(buf, i, b"false")?, Val::Lit(Some(false))),
            Some(b'n') => (json::literal_end(buf, i, b"null")?, Val::Lit(None)),
            Some(b'-' | b'0'..=b'9') => {
                let e = json::number_end(buf, i)?;
                (e, Val::Num(&buf[i..e]))
            }
            _ => return err(i, "expected a value"),
        };
        self.leaf(node, val, i)?;
        Ok(end)
    }

    fn array(&mut self, mut i: usize, node: usize, depth: usize) -> Res<usize> {
        if depth > self.c.max_event_depth {
            return err(i, "event nests too deeply");
        }
        let buf = self.buf;
        let id = self.s.arrays;
        self.s.arrays += 1;
        i = json::skip_ws(buf, i + 1);
        if buf.get(i) == Some(&b']') {
            return Ok(i + 1);
        }
        let mut index = 0u32;
        loop {
            self.s.trail.push((id, index));
            i = self.value(i, node, depth + 1, false)?;
            if self.stopped {
                return Ok(i);
            }
            self.s.trail.pop();
            index += 1;
            i = json::skip_ws(buf, i);
            match buf.get(i) {
                Some(b',') => i = json::skip_ws(buf, i + 1),
                Some(b']') => return Ok(i + 1),
                _ => return err(i, "expected ',' or ']'"),
            }
        }
    }

    fn span(&mut self) -> Span {
        span_of(self.s)
    }

    fn leaf(&mut self, node: usize, val: Val<'_>, at: usize) -> Res<()> {
        let n = &self.c.nodes[node];
        if n.absent_slot != NONE {
            let slot = n.absent_slot as usize;
            let span = self.span();
            let s = &mut *self.s;
            let next = if s.slot_stamp[slot] == s.epoch {
                s.slot_head[slot]
            } else {
                NONE
            };
            s.slot_stamp[slot] = s.epoch;
            s.slot_head[slot] = s.sats.len() as u32;
            s.sats.push((next, span));
        }
        if n.field == NONE {
            return Ok(());
        }
        let c = self.c;
        let field = &c.fields[n.field as usize];
        let s = &mut *self.s;
        let out = &mut *self.out;
        s.value_gen = s.value_gen.wrapping_add(1);
        let vg = s.value_gen;
        let mut fold = std::mem::take(&mut s.fold);
        let mut un = std::mem::take(&mut s.unescaped);
        let res = {
            // Satisfied predicates are recorded as the index finds them; `anything-but`
            // conditions the value matched are stamped, and their predicates decided below.
            let mut emit = |t: u32| {
                if t & NEG_BIT != 0 {
                    s.neg_stamp[(t & !NEG_BIT) as usize] = vg;
                } else {
                    satisfy(c, s, out, t);
                }
            };
            match val {
                Val::Str(raw, false) => {
                    field.eval_str(raw, &mut fold, &mut emit);
                    Ok(())
                }
                Val::Str(raw, true) => json::unescape(raw, at + 1, &mut un).map(|()| {
                    field.eval_str(&un, &mut fold, &mut emit);
                }),
                Val::Num(tok) => {
                    field.eval_num(tok, &mut emit);
                    Ok(())
                }
                Val::Lit(l) => {
                    field.eval_literal(l, &mut emit);
                    Ok(())
                }
            }
        };
        s.fold = fold;
        s.unescaped = un;
        res?;
        for &(neg, pred) in &field.negs {
            if s.neg_stamp[neg as usize] != vg {
                satisfy(c, s, out, pred);
            }
        }
        Ok(())
    }

    fn decide(&mut self) {
        let c = self.c;
        let s = &mut *self.s;
        let cands = std::mem::take(&mut s.cands);
        for &sub in cands.iter().chain(c.always.iter()) {
            let sr = &c.subrules[sub as usize];
            if s.rule_stamp[sr.rule as usize] == s.epoch {
                continue;
            }
            // Gather per-predicate satisfaction lists into one flat buffer.
            s.lists.clear();
            let mut bounds: smallvec::SmallVec<[(usize, usize); 8]> = smallvec::SmallVec::new();
            let mut all_plain = true;
            for &p in &sr.pos {
                let start = s.lists.len();
                let mut at = s.pred_head[p as usize];
                while at != NONE {
                    let (next, span) = s.sats[at as usize];
                    all_plain &= span.1 == 0;
                    s.lists.push(span);
                    at = next;
                }
                bounds.push((start, s.lists.len()));
            }
            for &slot in &sr.absent {
                let start = s.lists.len();
                if s.slot_stamp[slot as usize] == s.epoch {
                    let mut at = s.slot_head[slot as usize];
                    while at != NONE {
                        let (next, span) = s.sats[at as usize];
                        s.lists.push(span);
                        at = next;
                    }
                }
                all_plain &= s.lists.len() == start;
                bounds.push((start, s.lists.len()));
            }
            let ok = if all_plain {
                true
            } else {
                let lists: smallvec::SmallVec<[&[Span]; 8]> =
                    bounds.iter().map(|&(a, b)| &s.lists[a..b]).collect();
                let (pos, absent) = lists.split_at(sr.pos.len());
                search(&s.arena, pos, absent, &mut Vec::new())
            };
            if ok {
                s.rule_stamp[sr.rule as usize] = s.epoch;
                self.out.push(sr.rule);
            }
        }
        s.cands = cands;
    }
}

/// Records the current array trail in the arena; `(0, 0)` outside arrays.
fn span_of(s: &mut Scratch) -> Span {
    if s.trail.is_empty() {
        return (0, 0);
    }
    let span = (s.arena.len() as u32, s.trail.len() as u32);
    s.arena.extend_from_slice(&s.trail);
    span
}

/// Records that the current value satisfies predicate `pred`: rules that need nothing else
/// match at once; sub-rules count their distinct satisfied predicates and become candidates
/// for the final decision when all are.
fn satisfy<Id>(c: &Compiled<Id>, s: &mut Scratch, out: &mut Vec<u32>, pred: u32) {
    let info = &c.preds[pred as usize];
    for &r in &info.direct_rules {
        if s.rule_stamp[r as usize] != s.epoch {
            s.rule_stamp[r as usize] = s.epoch;
            out.push(r);
        }
    }
    if info.complex.is_empty() {
        return;
    }
    let span = span_of(s);
    let p = pred as usize;
    let first = s.pred_stamp[p] != s.epoch;
    let next = if first { NONE } else { s.pred_head[p] };
    s.pred_stamp[p] = s.epoch;
    s.pred_head[p] = s.sats.len() as u32;
    s.sats.push((next, span));
    if first {
        for &sub in &info.complex {
            let k = sub as usize;
            if s.sub_stamp[k] != s.epoch {
                s.sub_stamp[k] = s.epoch;
                s.sub_count[k] = 0;
            }
            s.sub_count[k] += 1;
            if s.sub_count[k] as usize == c.subrules[k].pos.len() {
                s.cands.push(sub);
            }
        }
    }
}

struct Defs<Id> {
    rules: Vec<(Id, Vec<Arc<Pattern>>)>,
    index: HashMap<Id, usize, RandomState>,
    wildcards: usize,
}

/// A concurrently usable set of named rules. Readers ([`Matcher::matches_for_event`],
/// [`Matcher::snapshot`]) never block; writers serialise among themselves.
pub struct Matcher<Id> {
    defs: Mutex<Defs<Id>>,
    snap: ArcSwap<Compiled<Id>>,
    limits: Limits,
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

impl<Id: Clone + Eq + Hash> Matcher<Id> {
    /// An empty matcher with AWS's default limits.
    pub fn new() -> Self {
        Self::with_limits(Limits::default())
    }

    /// An empty matcher with the given limits.
    pub fn with_limits(limits: Limits) -> Self {
        Matcher {
            snap: ArcSwap::from_pointee(Compiled::build(std::iter::empty(), &limits)),
            defs: Mutex::new(Defs {
                rules: Vec::new(),
                index: HashMap::default(),
                wildcards: 0,
            }),
            limits,
        }
    }

    /// The limits in force.
    pub fn limits(&self) -> &Limits {
        &self.limits
    }

    /// Adds one pattern to rule `id` (a rule with several patterns matches when any does).
    pub fn add_pattern(&self, id: Id, pattern: &str) -> Result<(), PatternError> {
        self.add_patterns([(id, pattern)])
    }

    /// Adds many patterns with one rebuild. All or nothing: if any pattern is invalid, none is
    /// added and the error names it.
    pub fn add_patterns<'s>(
        &self,
        items: impl IntoIterator<Item = (Id, &'s str)>,
    ) -> Result<(), PatternError> {
        let mut parsed = Vec::new();
        let mut wildcards = 0usize;
        for (id, text) in items {
            let p = Pattern::parse_with(text, &self.limits)?;
            wildcards += p.wildcard_conditions();
            parsed.push((id, Arc::new(p)));
        }
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        if defs.wildcards + wildcards > self.limits.max_wildcard_conditions {
            return Err(PatternError::new(
                &[],
                format!(
                    "too many wildcard conditions: {} would exceed the matcher's complexity limit of {}",
                    defs.wildcards + wildcards,
                    self.limits.max_wildcard_conditions
                ),
            ));
        }
        defs.wildcards += wildcards;
        for (id, p) in parsed {
            match defs.index.get(&id) {
                Some(&k) => defs.rules[k].1.push(p),
                None => {
                    let k = defs.rules.len();
                    defs.index.insert(id.clone(), k);
                    defs.rules.push((id, vec![p]));
                }
            }
        }
        self.publish(&defs);
        Ok(())
    }

    /// Removes rule `id` and all its patterns. Returns whether it existed.
    pub fn remove_rule(&self, id: &Id) -> bool {
        let mut defs = self.defs.lock().unwrap_or_else(|e| e.into_inner());
        let Some(k) = defs.index.remove(id) else {
            return false;
        };
        let (_, pats) = defs.rules.swap_remove(k);
        defs.wildcards -= pats.iter().map(|p| p.wildcard_conditions()).sum::<usize>();
        if k < defs.rules.len() {
            let moved = defs.rules[k].0.clone();
            defs.index.insert(moved, k);
        }
        self.publish(&defs);
        true
    }

    /// Number of rules.
    pub fn len(&self) -> usize {
        self.snap.load().len()
    }

    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn publish(&self, defs: &Defs<Id>) {
        let c = Compiled::build(
            defs.rules
                .iter()
                .map(|(id, ps)| (id.clone(), ps.as_slice())),
            &self.limits,
        );
        self.snap.store(Arc::new(c));
    }

    /// The current compiled snapshot (lock-free). Hold it to match many events against one
    /// consistent rule set with your own [`Scratch`].
    pub fn snapshot(&self) -> Arc<Compiled<Id>> {
        self.snap.load_full()
    }

    /// Ids of the rules matching `event` (a JSON object), each once.
    pub fn matches_for_event(&self, event: &[u8]) -> Result<Vec<Id>, EventError> {
        let snap = self.snap.load();
        SCRATCH.with(|s| snap.matches_for_event(event, &mut s.borrow_mut()))
    }
}

impl<Id: Clone + Eq + Hash> Default for Matcher<Id> {
    fn default() -> Self {
        Self::new()
    }
}
