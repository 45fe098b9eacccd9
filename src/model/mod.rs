//! The pure heart of Portcullis: `build(&Snapshot, &BuildSettings, &LastGood)` → `Built`.
//!
//! No I/O, no clock, no sockets: the same objects in any order give the same table and the
//! same diagnostics. A bad object yields diagnostics and drops only itself; an object that was
//! good before and is bad now keeps its last good version (carried in [`LastGood`]).

pub mod diagnostic;
pub mod host;
pub mod route;
pub mod upstream;

use crate::settings::BuildSettings;
use crate::source::Snapshot;
use crate::table::RouteTable;
use diagnostic::Diagnostic;

/// The last good version of each object that was valid once, so that a later bad edit does
/// not take it out of service. Opaque to callers: pass the previous build's value back in.
#[derive(Debug, Clone, Default)]
pub struct LastGood {
    _private: (),
}

/// The output of one build.
#[derive(Debug, Clone)]
pub struct Built {
    pub table: RouteTable,
    /// Sorted, de-duplicated.
    pub diagnostics: Vec<Diagnostic>,
    pub last_good: LastGood,
}

/// Builds the routing table from a snapshot of objects.
pub fn build(snapshot: &Snapshot, settings: &BuildSettings, last_good: &LastGood) -> Built {
    let _ = (snapshot, settings);
    Built {
        table: RouteTable::default(),
        diagnostics: Vec::new(),
        last_good: last_good.clone(),
    }
}
