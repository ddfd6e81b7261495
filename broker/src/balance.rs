//! Smooth weighted round-robin (the nginx algorithm): picks spread evenly in proportion to
//! weight, e.g. weights 5/1/1 give a a b a c a a. State survives instance-list changes: new
//! instances start at 0, vanished ones are forgotten.

use std::collections::HashMap;

/// Per-candidate running weights for one service and colour.
#[derive(Debug, Default)]
pub struct SmoothWeighted {
    current: HashMap<String, i64>,
}

impl SmoothWeighted {
    /// Picks one of `candidates` (`(key, weight)`, weights ≥ 1); `None` if there are none.
    pub fn pick<'a>(&mut self, candidates: &'a [(String, i64)]) -> Option<&'a str> {
        self.current
            .retain(|key, _| candidates.iter().any(|(k, _)| k == key));
        let total: i64 = candidates.iter().map(|(_, w)| *w).sum();
        let mut best: Option<(&'a str, i64)> = None;
        for (key, weight) in candidates {
            let current = self.current.entry(key.clone()).or_insert(0);
            *current += weight;
            if best.is_none_or(|(_, b)| *current > b) {
                best = Some((key, *current));
            }
        }
        let (key, _) = best?;
        *self.current.get_mut(key)? -= total;
        Some(key)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn picks_follow_the_nginx_sequence() {
        let candidates = vec![
            ("a".to_owned(), 5),
            ("b".to_owned(), 1),
            ("c".to_owned(), 1),
        ];
        let mut swrr = SmoothWeighted::default();
        let picks: String = (0..14)
            .map(|_| swrr.pick(&candidates).unwrap().to_owned())
            .collect();
        assert_eq!(picks, "aabacaaaabacaa");
    }

    #[test]
    fn no_candidates_no_pick_and_vanished_ones_are_forgotten() {
        let mut swrr = SmoothWeighted::default();
        assert_eq!(swrr.pick(&[]), None);
        swrr.pick(&[("a".to_owned(), 1), ("b".to_owned(), 1)]);
        assert_eq!(swrr.pick(&[("c".to_owned(), 1)]), Some("c"));
        assert_eq!(swrr.current.len(), 1);
    }
}
