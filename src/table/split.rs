//! Gateway API weighted `backendRefs`: a route's requests shared among several upstreams in
//! proportion to their weights. An invalid backendRef keeps its share, answered 500: "If
//! multiple backends are specified, and some are invalid, the proportion of requests that
//! would otherwise have been routed to an invalid backend MUST receive a 500 status code"
//! (Gateway API, `HTTPRouteRule.backendRefs`).

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Serialize, Serializer};

use super::upstream::Upstream;

/// The upstreams of one route and their weights (each > 0); `None` is an invalid backendRef's
/// share. The route's own `upstream` is one of them.
#[derive(Debug)]
pub struct WeightedSplit {
    entries: Vec<(Option<Arc<Upstream>>, u32)>,
    total: u64,
    /// Requests routed so far: request `n` goes to the entry whose cumulative weight range
    /// holds `n mod total`, spread out (see [`WeightedSplit::pick`]) so that weights 1:1 give
    /// A, B, A, B rather than runs.
    next: AtomicU64,
}

impl WeightedSplit {
    /// `None` when fewer than two entries have a weight, or none is valid: no split to make.
    pub(crate) fn new(entries: Vec<(Option<Arc<Upstream>>, u32)>) -> Option<WeightedSplit> {
        let entries: Vec<_> = entries.into_iter().filter(|(_, w)| *w > 0).collect();
        if entries.len() < 2 || entries.iter().all(|(u, _)| u.is_none()) {
            return None;
        }
        let total = entries.iter().map(|(_, w)| u64::from(*w)).sum();
        Some(WeightedSplit {
            entries,
            total,
            next: AtomicU64::new(0),
        })
    }

    /// The upstream for the next request, `None` for an invalid backendRef's share (answered
    /// 500). Deterministic: over any `total` consecutive requests each entry gets exactly its
    /// weight.
    pub(crate) fn pick(&self) -> Option<&Arc<Upstream>> {
        let n = self.next.fetch_add(1, Ordering::Relaxed) % self.total;
        // Bit-reversal-free spreading: walk the slots in a stride coprime with `total` so that
        // one upstream's share is not served as one run.
        let slot = (n * stride(self.total)) % self.total;
        let mut acc = 0u64;
        for (upstream, weight) in &self.entries {
            acc += u64::from(*weight);
            if slot < acc {
                return upstream.as_ref();
            }
        }
        self.entries[0].0.as_ref()
    }

    pub(crate) fn upstreams(&self) -> impl Iterator<Item = &Arc<Upstream>> {
        self.entries.iter().filter_map(|(u, _)| u.as_ref())
    }

    /// `namespace/service:port weight` entries (`invalid backendRef weight n`: answered 500,
    /// or a pass-through connection refused), for `check` and the admin API.
    pub(crate) fn describe(&self) -> Vec<String> {
        self.entries
            .iter()
            .map(|(u, w)| match u {
                Some(u) => format!("{} weight {w}", u.service),
                None => format!("invalid backendRef weight {w}"),
            })
            .collect()
    }
}

/// The largest number below `total`/2+1 that is coprime with it (1 when none): a stride that
/// visits every slot once per cycle while jumping across the weight ranges.
fn stride(total: u64) -> u64 {
    let gcd = |mut a: u64, mut b: u64| {
        while b != 0 {
            (a, b) = (b, a % b);
        }
        a
    };
    (1..=total / 2 + 1)
        .rev()
        .find(|s| *s < total && gcd(*s, total) == 1)
        .unwrap_or(1)
}

// Compared by what it says, not by its counter.
impl PartialEq for WeightedSplit {
    fn eq(&self, other: &Self) -> bool {
        self.entries == other.entries
    }
}

impl Serialize for WeightedSplit {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.collect_seq(self.describe())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_cycle_gives_each_upstream_its_weight_spread_out() {
        let total = |w: &[u64]| w.iter().sum::<u64>();
        for weights in [[1u64, 1], [3, 1], [70, 30], [1, 9]] {
            let t = total(&weights);
            let mut counts = [0u64; 2];
            let mut longest_run = 0;
            let (mut run, mut last) = (0, usize::MAX);
            for n in 0..t {
                let slot = (n * stride(t)) % t;
                let which = usize::from(slot >= weights[0]);
                counts[which] += 1;
                run = if which == last { run + 1 } else { 1 };
                last = which;
                longest_run = longest_run.max(run);
            }
            assert_eq!(counts, weights, "weights {weights:?}");
            if weights == [1, 1] {
                assert_eq!(longest_run, 1, "1:1 alternates");
            }
        }
    }
}
