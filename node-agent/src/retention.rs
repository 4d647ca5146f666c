//! `--retention.terminated`, in one place: things that ended (removed cgroups, stopped
//! workloads, departed pods) are kept for a while with what is worth keeping of them, then
//! expire: once they have been ended for the retention, or sooner, oldest first, when more have
//! ended than the bound allows. Pure: the caller says when things end and what time it is.

use std::{
    collections::BTreeMap,
    time::{Duration, Instant},
};

/// A point in time the tracker can measure ages from: the kernel's monotonic clock as a
/// `Duration` since boot, or an `Instant`.
pub trait Timestamp: Copy + Ord {
    /// Time from `earlier` to `self` (zero if `earlier` is later).
    fn since(self, earlier: Self) -> Duration;
}

impl Timestamp for Duration {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_sub(earlier)
    }
}

impl Timestamp for Instant {
    fn since(self, earlier: Self) -> Duration {
        self.saturating_duration_since(earlier)
    }
}

/// Ended things by key, each with when it ended and a kept value.
#[derive(Clone, Debug)]
pub struct Retention<K, V = (), T = Duration> {
    ended: BTreeMap<K, (T, V)>,
}

impl<K, V, T> Default for Retention<K, V, T> {
    fn default() -> Self {
        Self {
            ended: BTreeMap::new(),
        }
    }
}

impl<K: Ord + Clone, V, T: Timestamp> Retention<K, V, T> {
    pub fn new() -> Self {
        Self::default()
    }

    /// `key` ended at `at`, keeping `value`. If it had already ended, its clock keeps running
    /// from then and its value stays.
    pub fn end(&mut self, key: K, at: T, value: V) {
        self.ended.entry(key).or_insert((at, value));
    }

    /// `key` ended (again) at `at`, keeping `value`: its clock starts over.
    pub fn renew(&mut self, key: K, at: T, value: V) {
        self.ended.insert(key, (at, value));
    }

    /// `key` is back (it had not ended after all): it is no longer tracked.
    pub fn resume(&mut self, key: &K) -> Option<V> {
        self.ended.remove(key).map(|(_, v)| v)
    }

    /// Resumes every key for which `back` says so.
    pub fn resume_if(&mut self, mut back: impl FnMut(&K) -> bool) {
        self.ended.retain(|k, _| !back(k));
    }

    pub fn contains(&self, key: &K) -> bool {
        self.ended.contains_key(key)
    }

    /// When `key` ended, and what is kept of it.
    pub fn get(&self, key: &K) -> Option<(T, &V)> {
        self.ended.get(key).map(|(t, v)| (*t, v))
    }

    /// Every ended key, when it ended and its value, in key order.
    pub fn iter(&self) -> impl Iterator<Item = (&K, T, &V)> {
        self.ended.iter().map(|(k, (t, v))| (k, *t, v))
    }

    /// Removes and returns what expired at `now`: everything ended for at least `keep_for`,
    /// and, while more than `max` remain, the longest-ended (ties by key).
    pub fn expire(&mut self, now: T, keep_for: Duration, max: usize) -> Vec<(K, V)> {
        let over = self.ended.len().saturating_sub(max);
        let mut expired: Vec<(T, K)> = if over == 0 {
            self.ended
                .iter()
                .filter(|(_, (t, _))| now.since(*t) >= keep_for)
                .map(|(k, (t, _))| (*t, k.clone()))
                .collect()
        } else {
            let mut by_age: Vec<(T, &K)> = self.ended.iter().map(|(k, (t, _))| (*t, k)).collect();
            by_age.sort_unstable();
            by_age
                .into_iter()
                .enumerate()
                .filter(|(i, (t, _))| *i < over || now.since(*t) >= keep_for)
                .map(|(_, (t, k))| (t, k.clone()))
                .collect()
        };
        expired.sort_unstable();
        expired
            .into_iter()
            .filter_map(|(_, k)| self.ended.remove(&k).map(|(_, v)| (k, v)))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeSet;

    use proptest::prelude::*;

    use super::*;

    fn s(secs: u64) -> Duration {
        Duration::from_secs(secs)
    }

    #[test]
    fn keeps_for_the_retention_then_expires() {
        let mut r: Retention<u64, &str> = Retention::new();
        r.end(1, s(10), "one");
        r.end(2, s(12), "two");
        assert!(r.expire(s(14), s(5), 10).is_empty(), "4 s and 2 s old");
        assert_eq!(r.expire(s(15), s(5), 10), vec![(1, "one")], "5 s old: gone");
        assert_eq!(r.get(&2), Some((s(12), &"two")));
        assert_eq!(r.expire(s(100), s(5), 10), vec![(2, "two")]);
        assert_eq!(r.iter().count(), 0);
    }

    #[test]
    fn end_keeps_the_first_time_and_renew_restarts_the_clock() {
        let mut r: Retention<u64, u32> = Retention::new();
        r.end(1, s(10), 1);
        r.end(1, s(20), 2);
        assert_eq!(r.get(&1), Some((s(10), &1)), "already ended: unchanged");
        r.renew(1, s(20), 3);
        assert_eq!(r.get(&1), Some((s(20), &3)));
        assert!(
            r.expire(s(24), s(5), 10).is_empty(),
            "4 s since the renewal"
        );
        assert_eq!(r.resume(&1), Some(3));
        assert!(!r.contains(&1));
        assert_eq!(r.resume(&1), None);
    }

    #[test]
    fn beyond_the_bound_the_oldest_go_first() {
        let mut r: Retention<&str> = Retention::new();
        r.end("c", s(3), ());
        r.end("a", s(1), ());
        r.end("b", s(2), ());
        r.end("z", s(2), ());
        let gone: Vec<&str> = r.expire(s(4), s(60), 2).into_iter().map(|e| e.0).collect();
        assert_eq!(gone, ["a", "b"], "oldest first, ties by key");
        assert_eq!(r.iter().map(|e| *e.0).collect::<Vec<_>>(), ["c", "z"]);
        assert_eq!(r.expire(s(4), s(60), 0).len(), 2);
        assert_eq!(r.iter().count(), 0);
    }

    #[test]
    fn works_with_instants() {
        let mut r: Retention<String, (), Instant> = Retention::new();
        let t0 = Instant::now();
        r.end("pod".into(), t0, ());
        assert!(r.expire(t0, Duration::from_secs(1), usize::MAX).is_empty());
        assert_eq!(r.expire(t0, Duration::ZERO, usize::MAX).len(), 1);
        r.end("a".into(), t0, ());
        r.end("b".into(), t0, ());
        r.resume_if(|k| k == "a");
        assert_eq!(r.iter().map(|e| e.0.as_str()).collect::<Vec<_>>(), ["b"]);
    }

    #[derive(Clone, Debug)]
    enum Op {
        End(u8),
        Renew(u8),
        Resume(u8),
        Expire { keep_for: u64, max: usize },
    }

    fn op() -> impl Strategy<Value = Op> {
        prop_oneof![
            (0u8..12).prop_map(Op::End),
            (0u8..12).prop_map(Op::Renew),
            (0u8..12).prop_map(Op::Resume),
            (0u64..6, 0usize..8).prop_map(|(keep_for, max)| Op::Expire { keep_for, max }),
        ]
    }

    proptest! {
        /// Against a plain model (a list of (key, ended at)): the same keys stay; after an
        /// expiry none left is older than the retention, at most `max` are left, and every key
        /// that went ended no later than every key that stayed (unless it went for its age).
        #[test]
        fn follows_the_model(ops in proptest::collection::vec((op(), 0u64..3), 1..80)) {
            let mut r: Retention<u8, u64> = Retention::new();
            let mut model: BTreeMap<u8, u64> = BTreeMap::new();
            let mut now = 0u64;
            for (op, step) in ops {
                now += step;
                match op {
                    Op::End(k) => {
                        r.end(k, s(now), now);
                        model.entry(k).or_insert(now);
                    }
                    Op::Renew(k) => {
                        r.renew(k, s(now), now);
                        model.insert(k, now);
                    }
                    Op::Resume(k) => {
                        prop_assert_eq!(r.resume(&k).is_some(), model.remove(&k).is_some());
                    }
                    Op::Expire { keep_for, max } => {
                        let gone = r.expire(s(now), s(keep_for), max);
                        let kept: BTreeSet<u8> = r.iter().map(|e| *e.0).collect();
                        prop_assert!(kept.len() <= max);
                        for (k, v) in &gone {
                            let ended = model.remove(k).expect("only tracked keys expire");
                            prop_assert_eq!(*v, ended, "the kept value comes back");
                            let for_age = now - ended >= keep_for;
                            let oldest = kept.iter().all(|o| (model[o], *o) > (ended, *k));
                            prop_assert!(for_age || oldest, "key {} went too early", k);
                        }
                        for (k, ended) in &model {
                            prop_assert!(now - ended < keep_for, "key {} outlived the retention", k);
                        }
                        prop_assert_eq!(kept, model.keys().copied().collect::<BTreeSet<_>>());
                    }
                }
                prop_assert_eq!(r.iter().count(), model.len());
            }
        }
    }
}
