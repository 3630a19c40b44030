//! A secret rule's compiled form and its search: one Thompson NFA per rule,
//! run by a bounded backtracker (or, over a window too long for it, a
//! PikeVM), only in the windows around the rule's anchors.
//!
//! No lazy DFA: a gate runs beside every gated server, and the regex
//! crate's `Regex` carries a forward and a reverse automaton, literal
//! prefilters and a lazy DFA's search caches per rule (all 16 rules: 0.7
//! MiB of heap; their NFAs alone: 0.1 MiB). The anchors already say where a
//! match can be, so the slower engines run over a few hundred bytes, and
//! their search state lives for one search only.

use std::ops::Range;

use regex_automata::{
    Input,
    nfa::thompson::{self, NFA, backtrack::BoundedBacktracker, pikevm::PikeVM},
    util::{captures::Captures, syntax},
};

/// The backtracker's visited set, bytes: it searches a window of up to
/// `8 * VISITED / states` bytes (the private-key rule: ~1 KiB), longer ones
/// go to the PikeVM. Allocated for one search, as needed.
const VISITED: usize = 32 << 10;

/// One rule's automata: the NFA, shared by both engines.
pub struct Compiled {
    backtrack: BoundedBacktracker,
    pikevm: PikeVM,
}

/// One match: its capture groups in the text.
pub struct Groups<'t> {
    caps: &'t Captures,
    text: &'t [u8],
}

impl<'t> Groups<'t> {
    /// Group `i`'s range (0: the whole match), if it took part.
    pub fn range(&self, i: usize) -> Option<Range<usize>> {
        self.caps.get_group(i).map(|s| s.range())
    }

    /// Group `i`'s bytes, if it took part.
    pub fn bytes(&self, i: usize) -> Option<&'t [u8]> {
        self.range(i).map(|r| &self.text[r])
    }

    /// How many groups the pattern has (the whole match included).
    pub fn len(&self) -> usize {
        self.caps.group_len()
    }
}

impl Compiled {
    /// Compiles an ASCII byte pattern of the catalogue.
    pub fn new(pattern: &str) -> Result<Self, Box<thompson::BuildError>> {
        let nfa: NFA = thompson::Compiler::new()
            .syntax(syntax::Config::new().unicode(false).utf8(false))
            .configure(thompson::Config::new().utf8(false))
            .build(pattern)
            .map_err(Box::new)?;
        let backtrack = BoundedBacktracker::builder()
            .configure(BoundedBacktracker::config().visited_capacity(VISITED))
            .build_from_nfa(nfa.clone())
            .map_err(Box::new)?;
        let pikevm = PikeVM::new_from_nfa(nfa).map_err(Box::new)?;
        Ok(Self { backtrack, pikevm })
    }

    /// Every leftmost-first match within `windows` (sorted, disjoint; look
    /// arounds such as `\b` and `^` see the whole text), in order.
    pub fn each_match(&self, text: &[u8], windows: &[Range<usize>], mut f: impl FnMut(&Groups<'_>)) {
        let mut caps = self.pikevm.create_captures();
        let (mut bt, mut vm) = (None, None);
        for w in windows {
            let mut at = w.start;
            while at < w.end {
                let input = Input::new(text).range(at..w.end);
                if w.end - at <= self.backtrack.max_haystack_len() {
                    let cache = bt.get_or_insert_with(|| self.backtrack.create_cache());
                    if self.backtrack.try_search(cache, &input, &mut caps).is_err() {
                        caps.set_pattern(None);
                    }
                } else {
                    let cache = vm.get_or_insert_with(|| self.pikevm.create_cache());
                    self.pikevm.search(cache, &input, &mut caps);
                }
                let Some(m) = caps.get_match() else { break };
                f(&Groups { caps: &caps, text });
                at = m.end().max(m.start() + 1);
            }
        }
    }
}
