//! A secret rule's compiled form and its search: one Thompson NFA per rule,
//! run by a bounded backtracker (or a PikeVM: anchored, or over a window too
//! long for the backtracker) only in the windows around the rule's anchors;
//! the two rules anchored on common words keep a lazy DFA.
//!
//! A gate runs beside every gated server, and the regex crate's `Regex`
//! carries a forward and a reverse automaton, literal prefilters and a lazy
//! DFA's search caches per rule (all 16 rules: 0.7 MiB of heap; their NFAs
//! alone: 0.1 MiB). The anchors already say where a match can be, so the
//! slower engines run over a few hundred bytes, and their search state lives
//! for one search only.

use std::ops::Range;

use regex_automata::{
    Anchored, Input, meta,
    nfa::thompson::{self, NFA, backtrack::BoundedBacktracker, pikevm::PikeVM},
    util::{captures::Captures, syntax},
};

/// The backtracker's visited set, bytes: it searches a window of up to
/// `8 * VISITED / states` bytes (the private-key rule: ~1 KiB), longer ones
/// go to the PikeVM. Allocated for one search, as needed.
const VISITED: usize = 32 << 10;

/// One rule's automata.
pub enum Compiled {
    /// The NFA, shared by both engines.
    Nfa {
        backtrack: BoundedBacktracker,
        pikevm: PikeVM,
    },
    /// With a lazy DFA (forward and reverse) finding the matches, for the
    /// rules whose anchors are common words: their windows cover whole
    /// texts of benign words (`key`, `token`, `api`), where the NFA engines
    /// cost 50–100 µs per KB. Its search caches are kept (up to 50 KiB).
    Dfa(meta::Regex),
}

/// One search of a window, its result in the captures.
type Search<'a> = Box<dyn FnMut(&Input<'_>, &mut Captures) + 'a>;

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
    /// Compiles an ASCII byte pattern of the catalogue (`dfa`: with a lazy DFA).
    pub fn new(pattern: &str, dfa: bool) -> Result<Self, Box<dyn std::error::Error + Send + Sync>> {
        let syntax = syntax::Config::new().unicode(false).utf8(false);
        if dfa {
            let re = meta::Builder::new()
                .syntax(syntax)
                .configure(meta::Config::new().utf8_empty(false).onepass(false))
                .build(pattern)?;
            return Ok(Self::Dfa(re));
        }
        let nfa: NFA = thompson::Compiler::new()
            .syntax(syntax)
            .configure(thompson::Config::new().utf8(false))
            .build(pattern)?;
        let backtrack = BoundedBacktracker::builder()
            .configure(BoundedBacktracker::config().visited_capacity(VISITED))
            .build_from_nfa(nfa.clone())?;
        let pikevm = PikeVM::new_from_nfa(nfa)?;
        Ok(Self::Nfa { backtrack, pikevm })
    }

    /// Every leftmost-first match within `windows` (sorted, disjoint; look
    /// arounds such as `\b` and `^` see the whole text), in order; with
    /// `at_anchor`, the matches that begin where a window does (windows
    /// sorted by their start, a match's end skipping those it covers).
    pub fn each_match(&self, text: &[u8], windows: &[Range<usize>], at_anchor: bool, mut f: impl FnMut(&Groups<'_>)) {
        let mut caps = match self {
            Self::Nfa { pikevm, .. } => pikevm.create_captures(),
            Self::Dfa(re) => re.create_captures(),
        };
        let mut search = self.searcher();
        let mut done = 0;
        for w in windows {
            if at_anchor && w.start < done {
                continue;
            }
            let mut at = w.start.max(done);
            while at < w.end {
                let input = Input::new(text).range(at..w.end);
                search(
                    &input.anchored(if at_anchor { Anchored::Yes } else { Anchored::No }),
                    &mut caps,
                );
                let Some(m) = caps.get_match() else { break };
                f(&Groups { caps: &caps, text });
                at = m.end().max(m.start() + 1);
                done = at;
                if at_anchor {
                    break;
                }
            }
        }
    }

    /// A search, with the NFA engines' caches made as needed and dropped with it.
    fn searcher(&self) -> Search<'_> {
        match self {
            // The regex's own caches: a lazy DFA made anew for each search
            // costs 40 µs on 1 KB (its states built again), 1.5–5 kept.
            Self::Dfa(re) => Box::new(move |input, caps| re.search_captures(input, caps)),
            Self::Nfa { backtrack, pikevm } => {
                let (mut bt, mut vm) = (None, None);
                Box::new(move |input, caps| {
                    // Anchored, the PikeVM stops where the match can no
                    // longer grow; the backtracker would clear its visited
                    // set for the whole window first.
                    if input.get_anchored().is_anchored() {
                        let cache = vm.get_or_insert_with(|| pikevm.create_cache());
                        pikevm.search(cache, input, caps);
                    } else if input.get_span().len() <= backtrack.max_haystack_len() {
                        let cache = bt.get_or_insert_with(|| backtrack.create_cache());
                        if backtrack.try_search(cache, input, caps).is_err() {
                            caps.set_pattern(None);
                        }
                    } else {
                        let cache = vm.get_or_insert_with(|| pikevm.create_cache());
                        pikevm.search(cache, input, caps);
                    }
                })
            }
        }
    }
}
