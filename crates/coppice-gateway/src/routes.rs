//! HTTP routes, one module per resource.

pub mod health;
pub mod sandboxes;
pub mod templates;
