//! One integration test binary: every test talks to real Postgres and
//! RabbitMQ, each in its own database and vhost, and to our Finch emulator.

mod admin_listener;
mod cli;
mod connections;
mod dlq;
mod emulator;
mod helpers;
mod ingress;
mod least_privilege;
mod queue;
mod sdk_conformance;
mod sdk_verify;
mod shutdown;
mod tokens;
mod traces;
mod worker;
mod worker_process;
