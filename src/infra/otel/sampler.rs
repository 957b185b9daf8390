//! Which traces are recorded: `OTEL_TRACES_SAMPLER`'s samplers. A call
//! that is not recorded still passes a trace context upstream, flagged
//! not sampled, so the trace stays whole downstream.

use super::ids::{SpanContext, TraceId};
use crate::config::SamplerName;

#[derive(Clone, Copy, Debug)]
pub struct Sampler {
    /// Follow a remote parent's decision when there is one.
    parent_based: bool,
    /// For roots: keep trace ids below this bound (see `keeps`).
    bound: u64,
}

impl Sampler {
    pub fn new(name: SamplerName, ratio: f64) -> Self {
        let (parent_based, ratio) = match name {
            SamplerName::AlwaysOn => (false, 1.0),
            SamplerName::AlwaysOff => (false, 0.0),
            SamplerName::TraceIdRatio => (false, ratio),
            SamplerName::ParentbasedAlwaysOn => (true, 1.0),
            SamplerName::ParentbasedAlwaysOff => (true, 0.0),
            SamplerName::ParentbasedTraceIdRatio => (true, ratio),
        };
        // The id's low 63 bits against ratio × 2^63, as the Go and Rust
        // SDKs test it: services sampling alike keep the same traces.
        let bound = if ratio >= 1.0 {
            u64::MAX
        } else {
            (ratio.max(0.0) * (1u64 << 63) as f64) as u64
        };
        Self {
            parent_based,
            bound,
        }
    }

    /// Whether a new span of `trace_id` under `parent` is recorded.
    pub fn keeps(&self, trace_id: TraceId, parent: Option<&SpanContext>) -> bool {
        match parent {
            Some(parent) if self.parent_based => parent.sampled,
            _ => self.bound == u64::MAX || self.keeps_root(trace_id),
        }
    }

    fn keeps_root(&self, trace_id: TraceId) -> bool {
        let mut low = [0u8; 8];
        low.copy_from_slice(&trace_id.0[8..]);
        (u64::from_be_bytes(low) >> 1) < self.bound
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::infra::otel::ids::SpanId;

    fn parent(sampled: bool) -> SpanContext {
        SpanContext {
            trace_id: TraceId([1; 16]),
            span_id: SpanId([2; 8]),
            sampled,
            trace_state: None,
        }
    }

    #[test]
    fn parent_based_samplers_follow_the_caller() {
        let sampler = Sampler::new(SamplerName::ParentbasedTraceIdRatio, 0.0);
        assert!(sampler.keeps(TraceId::random(), Some(&parent(true))));
        assert!(!sampler.keeps(TraceId::random(), Some(&parent(false))));
        assert!(!sampler.keeps(TraceId::random(), None));
        let always = Sampler::new(SamplerName::AlwaysOn, 0.0);
        assert!(always.keeps(TraceId::random(), Some(&parent(false))));
    }

    #[test]
    fn the_ratio_keeps_about_its_share() {
        let sampler = Sampler::new(SamplerName::TraceIdRatio, 0.1);
        let kept = (0..20_000)
            .filter(|_| sampler.keeps(TraceId::random(), None))
            .count();
        assert!((1_500..2_500).contains(&kept), "{kept}");
    }
}
