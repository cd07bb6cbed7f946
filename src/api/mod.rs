//! The HTTP management API: its own listener (`[api] listen`), a bearer
//! token on every request, TLS when `[tls]` is configured; each route
//! turns into a `control::Request` sent to the shards like the control
//! socket's. Modules: `summary` (the data it answers), `routes` (sans-IO:
//! an HTTP request in, a control request or an answer out), `server`
//! (sockets, TLS, the token check).

pub mod routes;
pub mod server;
pub mod summary;
