//! Which lines two versions of a file share, cheaply: a common prefix and suffix by bytes, and a
//! line diff (imara-diff's histogram) of what lies between. The culprit search uses it to follow a
//! version's lines through commits that changed other parts of the file, without parsing YAML.
//! Also git's idea of how similar two files are, for following moves.

use std::collections::HashMap;
use std::ops::Range;

use imara_diff::{Algorithm, Diff, InternedInput};

/// The changed line ranges between two texts, 0-based, `(old, new)`, in order.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct LineMap {
    hunks: Vec<(Range<usize>, Range<usize>)>,
}

impl LineMap {
    pub fn between(old: &str, new: &str) -> LineMap {
        let (o, n) = (old.as_bytes(), new.as_bytes());
        let max = o.len().min(n.len());
        let mut prefix = o.iter().zip(n).take_while(|(a, b)| a == b).count();
        // Whole lines only.
        prefix = n[..prefix].iter().rposition(|b| *b == b'\n').map(|i| i + 1).unwrap_or(0);
        let mut suffix =
            o.iter().rev().zip(n.iter().rev()).take_while(|(a, b)| a == b).count().min(max - prefix);
        if suffix > 0 {
            let (os, ns) = (o.len() - suffix, n.len() - suffix);
            let at_line_start = |b: &[u8], at: usize| at == 0 || b[at - 1] == b'\n';
            if !(at_line_start(o, os) && at_line_start(n, ns)) {
                suffix = match n[ns..].iter().position(|b| *b == b'\n') {
                    Some(i) => suffix - i - 1,
                    None => 0,
                };
            }
        }
        let (old_mid, new_mid) = (&old[prefix..old.len() - suffix], &new[prefix..new.len() - suffix]);
        if old_mid.is_empty() && new_mid.is_empty() {
            return LineMap::default();
        }
        let first = new[..prefix].bytes().filter(|b| *b == b'\n').count();
        let input = InternedInput::new(old_mid, new_mid);
        let diff = Diff::compute(Algorithm::Histogram, &input);
        let hunks = diff
            .hunks()
            .map(|h| {
                let o = h.before.start as usize + first..h.before.end as usize + first;
                let n = h.after.start as usize + first..h.after.end as usize + first;
                (o, n)
            })
            .collect();
        LineMap { hunks }
    }

    pub fn is_empty(&self) -> bool {
        self.hunks.is_empty()
    }

    /// When lines `a..=b` (1-based, new side) and the line on either side of them are unchanged:
    /// how far they moved, `old = new + shift`. `None` when a change touches them.
    pub fn unchanged(&self, a: usize, b: usize) -> Option<isize> {
        let lo = a.saturating_sub(2);
        let hi = b;
        let mut shift = 0isize;
        for (old, new) in &self.hunks {
            let touches = if new.is_empty() {
                lo < new.start && new.start <= hi
            } else {
                new.start <= hi && new.end > lo
            };
            if touches {
                return None;
            }
            let before = if new.is_empty() { new.start <= lo } else { new.end <= lo };
            if before {
                shift += old.len() as isize - new.len() as isize;
            }
        }
        Some(shift)
    }
}

impl LineMap {
    /// For a line (1-based, new side) inside a change that replaced lines one for one: the line it
    /// replaced.
    pub fn line_in_hunk(&self, line: usize) -> Option<usize> {
        let i = line.checked_sub(1)?;
        let (old, new) = self.hunks.iter().find(|(_, new)| new.contains(&i))?;
        (old.len() == new.len()).then(|| old.start + (i - new.start) + 1)
    }

    /// Whether every change lies inside one of these line ranges (1-based, inclusive, new side).
    pub fn all_within(&self, regions: &[(usize, usize)]) -> bool {
        self.hunks.iter().all(|(_, new)| {
            regions.iter().any(|&(a, b)| {
                if new.is_empty() {
                    // Lines removed after line `new.start` (1-based): inside, or at the end of, the range.
                    a <= new.start && new.start <= b
                } else {
                    a <= new.start + 1 && new.end <= b
                }
            })
        })
    }
}

/// How much of the larger file the two share, line by line, 0.0 to 1.0 (git calls ≥ 0.5 a rename).
pub fn similarity(a: &str, b: &str) -> f64 {
    let larger = a.len().max(b.len());
    if larger == 0 {
        return 1.0;
    }
    let mut counts: HashMap<&str, (usize, usize)> = HashMap::new();
    for l in a.split_inclusive('\n') {
        counts.entry(l).or_default().0 += 1;
    }
    for l in b.split_inclusive('\n') {
        counts.entry(l).or_default().1 += 1;
    }
    let shared: usize = counts.iter().map(|(l, (x, y))| l.len() * (*x).min(*y)).sum();
    shared as f64 / larger as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lines(n: usize) -> Vec<String> {
        (1..=n).map(|i| format!("line {i}\n")).collect()
    }

    #[test]
    fn identical_texts_have_no_changes() {
        let t = lines(5).concat();
        let m = LineMap::between(&t, &t);
        assert!(m.is_empty());
        assert_eq!(m.unchanged(1, 5), Some(0));
    }

    #[test]
    fn lines_after_an_insertion_moved_and_lines_beside_it_count_as_touched() {
        let old = lines(10).concat();
        let mut new = lines(10);
        new.insert(2, "inserted a\n".into());
        new.insert(3, "inserted b\n".into());
        let new = new.concat();
        let m = LineMap::between(&old, &new);
        // New lines 3 and 4 are the insertion; new line 9 was old line 7.
        assert_eq!(m.unchanged(9, 9), Some(-2));
        assert_eq!(m.unchanged(1, 1), Some(0));
        assert_eq!(m.unchanged(2, 2), None, "the line right above the insertion is a neighbour");
        assert_eq!(m.unchanged(3, 3), None);
        assert_eq!(m.unchanged(5, 5), None, "the line right below is a neighbour too");
        assert_eq!(m.unchanged(6, 8), Some(-2));
    }

    #[test]
    fn removed_lines_shift_what_follows() {
        let old = lines(10).concat();
        let new: String =
            lines(10).into_iter().enumerate().filter(|(i, _)| *i != 4).map(|(_, l)| l).collect();
        let m = LineMap::between(&old, &new);
        assert_eq!(m.unchanged(8, 9), Some(1));
        assert_eq!(m.unchanged(1, 3), Some(0));
        assert_eq!(m.unchanged(4, 4), None, "the removal sits right below line 4");
        assert_eq!(m.unchanged(5, 5), None, "and right above line 5");
    }

    #[test]
    fn changes_on_both_sides_of_a_region_leave_it_alone() {
        let old = lines(20).concat();
        let new = old.replace("line 2\n", "line two\n").replace("line 18\n", "line eighteen\nextra\n");
        let m = LineMap::between(&old, &new);
        assert_eq!(m.unchanged(8, 12), Some(0));
        assert_eq!(m.unchanged(21, 21), Some(-1));
        assert_eq!(m.unchanged(20, 20), None, "line 19 above it was added");
        assert_eq!(m.unchanged(18, 18), None);
    }

    #[test]
    fn a_last_line_without_newline() {
        let old = "a\nb\nc";
        let new = "a\nb\nd";
        let m = LineMap::between(old, new);
        assert_eq!(m.unchanged(1, 1), Some(0));
        assert_eq!(m.unchanged(3, 3), None);
    }

    #[test]
    fn a_line_replaced_one_for_one_maps_to_the_line_it_replaced() {
        let old = lines(10).concat();
        let new = old.replace("line 1\n", "").replace("line 5\n", "line five\n");
        let m = LineMap::between(&old, &new);
        assert_eq!(m.line_in_hunk(4), Some(5));
        assert_eq!(m.line_in_hunk(3), None, "not changed");
        let grown = old.replace("line 5\n", "line five\nand more\n");
        assert_eq!(LineMap::between(&old, &grown).line_in_hunk(5), None, "two lines for one");
    }

    #[test]
    fn changes_within_ranges() {
        let old = lines(10).concat();
        let new = old.replace("line 4\n", "line four\n");
        let m = LineMap::between(&old, &new);
        assert!(m.all_within(&[(3, 5)]));
        assert!(m.all_within(&[(4, 4)]));
        assert!(!m.all_within(&[(5, 9)]));
        let removed = old.replace("line 6\n", "");
        let m = LineMap::between(&old, &removed);
        assert!(m.all_within(&[(4, 5)]), "a line removed right after the range's last line");
        assert!(!m.all_within(&[(7, 9)]));
        assert!(LineMap::between(&old, &old).all_within(&[]));
    }

    #[test]
    fn similarity_counts_shared_lines() {
        let a = lines(10).concat();
        let b = a.replace("line 3\n", "line three\n");
        assert!(similarity(&a, &b) > 0.8);
        assert!(similarity(&a, "other\n") < 0.1);
        assert_eq!(similarity("", ""), 1.0);
    }

    proptest::proptest! {
        /// Every line the map calls unchanged is the same text on both sides.
        #[test]
        fn unchanged_lines_are_the_same_text(
            old in proptest::collection::vec("[ab]{0,2}", 0..12),
            new in proptest::collection::vec("[ab]{0,2}", 0..12),
        ) {
            let old = old.iter().map(|l| format!("{l}\n")).collect::<String>();
            let new = new.iter().map(|l| format!("{l}\n")).collect::<String>();
            let m = LineMap::between(&old, &new);
            let (ol, nl): (Vec<&str>, Vec<&str>) = (old.lines().collect(), new.lines().collect());
            for a in 1..=nl.len() {
                if let Some(shift) = m.unchanged(a, a) {
                    let o = (a as isize + shift) as usize;
                    proptest::prop_assert!(o >= 1 && o <= ol.len(), "line {a} shifted to {o}");
                    proptest::prop_assert_eq!(ol[o - 1], nl[a - 1]);
                }
            }
        }
    }
}
