//! Cost allocation on the OpenCost model, for every cluster at once: prices ([`pricing`]), the
//! cost of a window computed from the samples ([`compute`]), OpenCost's window grammar
//! ([`window`]), filter language ([`filter`]), and the allocation answer with idle, shared cost
//! and aggregation ([`aggregate`]). Every read goes through the caller's scoped view.

pub mod aggregate;
pub mod allocation;
pub mod budget;
pub mod compute;
pub mod filter;
pub mod materialize;
pub mod pricing;
pub mod table;
pub mod window;

use std::sync::Arc;

use allocation::CostSet;
use pricing::Pricing;
use window::{Period, Window};

use crate::error::Result;
use crate::promql::{Engine, EngineOptions, SeriesSource};

/// Settings of the cost engine.
#[derive(Debug, Clone)]
pub struct CostOptions {
    /// Step of the running-time grid (OpenCost's resolution; default 1m).
    pub resolution_ms: i64,
    /// The most hours one answer may cover (bounds the work of one request).
    pub max_hours: usize,
}

impl Default for CostOptions {
    fn default() -> Self {
        Self {
            resolution_ms: 60_000,
            max_hours: 24 * 400,
        }
    }
}

/// Computes cost sets; cheap to clone.
#[derive(Debug, Clone)]
pub struct CostEngine {
    pricing: Arc<Pricing>,
    opts: CostOptions,
}

impl CostEngine {
    /// An engine charging at `pricing`.
    pub fn new(pricing: Arc<Pricing>, opts: CostOptions) -> Self {
        Self { pricing, opts }
    }

    /// The prices in use.
    pub fn pricing(&self) -> &Pricing {
        &self.pricing
    }

    /// The options in use.
    pub fn options(&self) -> &CostOptions {
        &self.opts
    }

    /// The cost of one window (at most a few hours: callers cut longer windows into hours).
    pub async fn window<S: SeriesSource + Sync>(
        &self,
        src: &S,
        engine: &EngineOptions,
        w: Window,
    ) -> Result<CostSet> {
        let e = Engine::new(engine.clone());
        compute::compute(&e, src, &self.pricing, w, self.opts.resolution_ms).await
    }

    /// The sets of `window` cut by `period` (clipped to `now_ms`; steps that start later are
    /// left out), each the sum of its hours, all computed from the samples `src` can see.
    pub async fn steps<S: SeriesSource + Sync>(
        &self,
        src: &S,
        engine: &EngineOptions,
        window: Window,
        period: Period,
        now_ms: i64,
    ) -> Result<Vec<CostSet>> {
        materialize::steps(
            None,
            self,
            src,
            &crate::scope::Scope::fleet(),
            engine,
            window,
            period,
            now_ms,
        )
        .await
    }
}
