//! The pure core: values in, values out. No I/O, no async, no clock: the time comes in as an argument.

pub mod extract;
pub mod image_ref;
pub mod yaml;
pub mod culprit;
pub mod revert;
pub mod alert;
pub mod policy;
pub mod render;
pub mod forge_event;
pub mod rules;
pub mod schedule;
pub mod chatops;
pub mod pause;
