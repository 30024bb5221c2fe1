//! One integration test binary: every test talks to real Postgres and
//! RabbitMQ, each in its own database and vhost.

mod dlq;
mod helpers;
mod ingress;
