//! One integration test binary: every test talks to real Postgres and
//! RabbitMQ, each in its own database and vhost, and to our Finch emulator.

mod cli;
mod connections;
mod console;
mod dlq;
mod emulator;
mod helpers;
mod ingress;
mod queue;
mod sdk_conformance;
mod sdk_verify;
mod shutdown;
mod traces;
mod worker;
