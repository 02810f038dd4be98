//! The pure core: values in, values out. No I/O, no async, no clock: the time comes in as an argument.

pub mod admission;
pub mod alert;
pub mod chatops;
pub mod cluster;
pub mod confirm;
pub mod culprit;
pub mod extract;
pub mod forge_event;
pub mod history;
pub mod image_ref;
pub mod image_updater;
pub mod linediff;
pub mod pause;
pub mod policy;
pub mod reconcile;
pub mod redact;
pub mod render;
pub mod revert;
pub mod rules;
pub mod schedule;
pub mod yaml;
