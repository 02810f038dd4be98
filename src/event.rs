//! What the engine is asked to act on, from every source: the server and the evaluator only verify,
//! translate and enqueue one of these.

use crate::domain::alert::{Alert, Source};
use crate::domain::forge_event::Comment;

/// One thing for the engine to act on.
pub enum Event {
    /// The alerts of one webhook delivery, one rule firing, or Alertmanager's list at start.
    Alerts(AlertDelivery),
    /// A comment with `/metricops` commands.
    Comment(Comment),
    /// A metricops revert PR was closed (merged or not): its branch goes.
    RevertClosed { repo: crate::forge::RepoId, branch: String, merged: bool },
    /// Look again for work a failure or a crash left unfinished (revert branches without their PR).
    Tick,
}

/// Alerts to act on; `received` starts the duration metric. A webhook delivery is in the journal as
/// `entry` until it is finished with; `attempts` counts the tries so far.
pub struct AlertDelivery {
    pub source: Source,
    pub alerts: Vec<Alert>,
    pub received: std::time::Instant,
    pub entry: Option<crate::journal::EntryId>,
    pub attempts: u32,
}

impl AlertDelivery {
    /// Alerts not in the journal (a rule of the evaluator, Alertmanager's list at start).
    pub fn unjournaled(source: Source, alerts: Vec<Alert>) -> AlertDelivery {
        AlertDelivery { source, alerts, received: std::time::Instant::now(), entry: None, attempts: 0 }
    }
}
