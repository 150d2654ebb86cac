//! The only place that knows the OS (`unix`): the calls std and rustix do not wrap.

mod unix;

pub(crate) use unix::{command_from_fd, wait_exited_child};
