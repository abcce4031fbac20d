//! Per-field value indexes shared by all rules.
//!
//! Every leaf path that some rule references gets one [`FieldIndex`]. Conditions are entered as
//! *targets* (`u32`): a predicate id, or, with [`NEG_BIT`] set, the id of one `anything-but`
//! condition. Looking a value up yields every target whose condition it satisfies, at a cost that
//! depends on the value (hash probes, trie walks of its length), not on how many rules there are,
//! except for the linear lists kept for numeric ranges, CIDR blocks and wildcards (the latter
//! bounded by [`crate::Limits::max_wildcard_conditions`]).

use crate::cond::{
    Condition, IpRange, Literal, NumRange, Wildcard, canonical_number, fold_case, parse_ip,
};
use ahash::RandomState;
use std::collections::HashMap;

/// Marks a target as an `anything-but` condition id rather than a predicate id.
pub(crate) const NEG_BIT: u32 = 1 << 31;

pub(crate) type Targets = Vec<u32>;

/// A byte trie: each node lists the targets whose string ends there.
#[derive(Debug, Default, Clone)]
pub(crate) struct Trie {
    nodes: Vec<TrieNode>,
}

#[derive(Debug, Default, Clone)]
struct TrieNode {
    edges: Vec<(u8, u32)>,
    targets: Targets,
}

impl Trie {
    fn insert(&mut self, key: impl Iterator<Item = u8>, target: u32) {
        if self.nodes.is_empty() {
            self.nodes.push(TrieNode::default());
        }
        let mut at = 0usize;
        for b in key {
            let next = match self.nodes[at].edges.iter().find(|e| e.0 == b) {
                Some(e) => e.1 as usize,
                None => {
                    let id = self.nodes.len();
                    self.nodes[at].edges.push((b, id as u32));
                    self.nodes.push(TrieNode::default());
                    id
                }
            };
            at = next;
        }
        self.nodes[at].targets.push(target);
    }

    fn is_empty(&self) -> bool {
        self.nodes.is_empty()
    }

    /// Emits the targets of every stored key that is a prefix of `key`.
    #[inline]
    fn walk(&self, key: impl Iterator<Item = u8>, emit: &mut impl FnMut(u32)) {
        if self.nodes.is_empty() {
            return;
        }
        let mut at = 0usize;
        for &t in &self.nodes[0].targets {
            emit(t);
        }
        for b in key {
            match self.nodes[at].edges.iter().find(|e| e.0 == b) {
                Some(e) => at = e.1 as usize,
                None => return,
            }
            for &t in &self.nodes[at].targets {
                emit(t);
            }
        }
    }
}

/// Value index of one leaf path.
#[derive(Debug, Default, Clone)]
pub(crate) struct FieldIndex {
    strings: HashMap<Box<[u8]>, Targets, RandomState>,
    numbers: HashMap<u64, Targets, RandomState>,
    trues: Targets,
    falses: Targets,
    nulls: Targets,
    any: Targets,
    prefix: Trie,
    suffix: Trie,
    prefix_ic: Trie,
    suffix_ic: Trie,
    equals_ic: HashMap<Box<[u8]>, Targets, RandomState>,
    ranges: Vec<(NumRange, u32)>,
    cidrs: Vec<(IpRange, u32)>,
    wildcards: Vec<(Wildcard, u32)>,
    /// `anything-but` conditions of this field: (global neg id, predicate id).
    pub(crate) negs: Vec<(u32, u32)>,
    needs_number: bool,
    needs_fold: bool,
    needs_str: bool,
    /// Byte lengths of the `equals_ic` keys, as bits (63: 63 or longer).
    ic_lens: u64,
}

impl FieldIndex {
    /// Adds one condition of predicate `pred`. `next_neg` allocates global `anything-but` ids.
    pub(crate) fn add(&mut self, cond: &Condition, pred: u32, next_neg: &mut u32) {
        match cond {
            Condition::AnythingBut(inner) => {
                let neg = *next_neg;
                *next_neg += 1;
                self.negs.push((neg, pred));
                for c in inner {
                    self.add_target(c, NEG_BIT | neg);
                }
            }
            c => self.add_target(c, pred),
        }
    }

    fn add_target(&mut self, cond: &Condition, t: u32) {
        match cond {
            Condition::Exact(Literal::Str(s)) => {
                self.needs_str = true;
                self.strings.entry(s.as_bytes().into()).or_default().push(t)
            }
            Condition::Exact(Literal::Num(x)) => {
                self.needs_number = true;
                self.numbers
                    .entry(canonical_number(*x).to_bits())
                    .or_default()
                    .push(t)
            }
            Condition::Exact(Literal::Bool(true)) => self.trues.push(t),
            Condition::Exact(Literal::Bool(false)) => self.falses.push(t),
            Condition::Exact(Literal::Null) => self.nulls.push(t),
            Condition::Exists => self.any.push(t),
            Condition::Prefix(p) => {
                self.needs_str = true;
                self.prefix.insert(p.bytes(), t)
            }
            Condition::Suffix(p) => {
                self.needs_str = true;
                self.suffix.insert(p.bytes().rev(), t)
            }
            Condition::PrefixIgnoreCase(p) => {
                self.needs_fold = true;
                self.prefix_ic.insert(p.bytes(), t)
            }
            Condition::SuffixIgnoreCase(p) => {
                self.needs_fold = true;
                self.suffix_ic.insert(p.bytes().rev(), t)
            }
            Condition::EqualsIgnoreCase(p) => {
                self.needs_fold = true;
                self.ic_lens |= 1u64 << p.len().min(63);
                self.equals_ic
                    .entry(p.as_bytes().into())
                    .or_default()
                    .push(t)
            }
            Condition::Wildcard(w) => {
                self.needs_str = true;
                self.wildcards.push((w.clone(), t))
            }
            Condition::Numeric(r) => {
                self.needs_number = true;
                self.ranges.push((*r, t))
            }
            Condition::Cidr(r) => {
                self.needs_str = true;
                self.cidrs.push((*r, t))
            }
            Condition::AnythingBut(_) => unreachable!("anything-but does not nest"),
        }
    }

    /// Emits targets satisfied by the (unescaped) string `s`. `fold` is scratch.
    #[inline]
    pub(crate) fn eval_str(&self, s: &[u8], fold: &mut Vec<u8>, emit: &mut impl FnMut(u32)) {
        for &t in &self.any {
            emit(t);
        }
        if self.needs_str {
            if let Some(ts) = self.strings.get(s) {
                for &t in ts {
                    emit(t);
                }
            }
            self.prefix.walk(s.iter().copied(), emit);
            if !self.suffix.is_empty() {
                self.suffix.walk(s.iter().rev().copied(), emit);
            }
            for (w, t) in &self.wildcards {
                if w.matches(s) {
                    emit(*t);
                }
            }
            if !self.cidrs.is_empty()
                && let Some((v6, x)) = std::str::from_utf8(s).ok().and_then(parse_ip)
            {
                for (r, t) in &self.cidrs {
                    if r.v6 == v6 && r.lo <= x && x <= r.hi {
                        emit(*t);
                    }
                }
            }
        }
        if self.needs_fold {
            if s.is_ascii() {
                // ASCII: per-byte lowering is the fold; tries walk the lowered bytes directly.
                let low = |b: &u8| b.to_ascii_lowercase();
                if self.ic_lens & (1u64 << s.len().min(63)) != 0 {
                    fold.clear();
                    fold.extend(s.iter().map(low));
                    if let Some(ts) = self.equals_ic.get(fold.as_slice()) {
                        for &t in ts {
                            emit(t);
                        }
                    }
                }
                self.prefix_ic.walk(s.iter().map(low), emit);
                if !self.suffix_ic.is_empty() {
                    self.suffix_ic.walk(s.iter().rev().map(low), emit);
                }
            } else if let Ok(text) = std::str::from_utf8(s) {
                let folded = fold_case(text);
                let f = folded.as_bytes();
                if let Some(ts) = self.equals_ic.get(f) {
                    for &t in ts {
                        emit(t);
                    }
                }
                self.prefix_ic.walk(f.iter().copied(), emit);
                if !self.suffix_ic.is_empty() {
                    self.suffix_ic.walk(f.iter().rev().copied(), emit);
                }
            }
        }
    }

    /// Whether the (unescaped) string `s` could satisfy a condition of this field (for the
    /// prefilter: any `anything-but` counts as possible).
    pub(crate) fn could_match_str(&self, s: &[u8], fold: &mut Vec<u8>) -> bool {
        let mut hit = !self.negs.is_empty();
        if !hit {
            self.eval_str(s, fold, &mut |_| hit = true);
        }
        hit
    }

    /// Like [`FieldIndex::could_match_str`] for a number token.
    pub(crate) fn could_match_num(&self, tok: &[u8]) -> bool {
        let mut hit = !self.negs.is_empty();
        if !hit {
            self.eval_num(tok, &mut |_| hit = true);
        }
        hit
    }

    /// Like [`FieldIndex::could_match_str`] for `true`, `false`, `null`.
    pub(crate) fn could_match_literal(&self, lit: Option<bool>) -> bool {
        let mut hit = !self.negs.is_empty();
        if !hit {
            self.eval_literal(lit, &mut |_| hit = true);
        }
        hit
    }

    /// Emits targets satisfied by a number token.
    #[inline]
    pub(crate) fn eval_num(&self, tok: &[u8], emit: &mut impl FnMut(u32)) {
        for &t in &self.any {
            emit(t);
        }
        if self.needs_number {
            let x = canonical_number(crate::json::parse_number(tok));
            if let Some(ts) = self.numbers.get(&x.to_bits()) {
                for &t in ts {
                    emit(t);
                }
            }
            for (r, t) in &self.ranges {
                if r.contains(x) {
                    emit(*t);
                }
            }
        }
    }

    /// Emits targets satisfied by `true`, `false` or `null`.
    #[inline]
    pub(crate) fn eval_literal(&self, lit: Option<bool>, emit: &mut impl FnMut(u32)) {
        for &t in &self.any {
            emit(t);
        }
        let list = match lit {
            Some(true) => &self.trues,
            Some(false) => &self.falses,
            None => &self.nulls,
        };
        for &t in list {
            emit(t);
        }
    }
}
