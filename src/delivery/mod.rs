//! Delivery: taking queued messages to their next hop. This module only
//! maps its parts.

pub mod router;
