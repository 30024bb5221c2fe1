//! One integration test binary: every test talks to real Postgres and
//! RabbitMQ, each in its own database and vhost, and to our Finch emulator.

mod admin_listener;
mod cli;
mod connections;
mod console;
mod dev_output;
mod dlq;
mod docs;
mod emulator;
mod emulator_fleet;
mod fleet;
mod helpers;
mod hostile_ingress;
mod ingress;
mod ingress_limits;
mod least_privilege;
mod queue;
mod redaction;
mod sdk_conformance;
mod sdk_verify;
mod shutdown;
mod survival;
mod tokens;
mod traces;
mod worker;
mod worker_process;
