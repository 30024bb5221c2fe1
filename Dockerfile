# syntax=docker/dockerfile:1.7
#
# One production image for every role: the command picks it.
#   docker run IMAGE                      -> serve (the default CMD)
#   docker run IMAGE worker | migrate | dlq ... | connections ...
#
# Build:  docker build -t finch-webhooks .
#
# The service is built with --no-default-features: the Finch emulator (and
# its fixed development credentials) and the subcommands that run on it
# (dev, emulator, send, bench) are not in the production binary. The local
# stack's emulator is a separate image from the `emulator` target:
#   docker build --target emulator -t finch-emulator .
#
# Dependency caching uses cargo-chef: `cargo chef prepare` reduces the
# workspace to a recipe (manifests and lock file only), and `cargo chef cook`
# compiles every dependency from that recipe in its own layer. That layer is
# rebuilt only when a Cargo.toml or Cargo.lock changes, so an edit under src/
# recompiles just our crates. cargo-chef was preferred over hand-written
# dummy sources because the workspace has several crates with library and
# binary targets; stubbing them all and fighting cargo's mtime-based
# fingerprints is exactly what cargo-chef automates. Each build cooks with
# the same package and feature flags it then builds with, or the cooked
# dependencies would not match and be compiled again.

# Also the workspace's rust-version in Cargo.toml (.ci/check-manifests).
ARG RUST_VERSION=1.95
# Builder and runtime share a Debian release so the binary's glibc matches.
ARG DEBIAN_RELEASE=bookworm

FROM rust:${RUST_VERSION}-slim-${DEBIAN_RELEASE} AS chef
ARG CARGO_CHEF_VERSION=0.1.78
RUN cargo install cargo-chef --locked --version "${CARGO_CHEF_VERSION}" \
    && rm -rf "${CARGO_HOME}/registry"
WORKDIR /build

FROM chef AS planner
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN cargo chef prepare --recipe-path recipe.json

FROM chef AS builder
COPY --from=planner /build/recipe.json recipe.json
# The registry cache mount only saves downloads when the recipe changes; the
# compiled dependencies themselves live in this layer.
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --package finch-webhooks --no-default-features \
        --recipe-path recipe.json
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
# Both are compiled into the binary (sqlx::migrate! and include_str!), so the
# runtime image needs neither.
COPY migrations ./migrations
COPY config ./config
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked --package finch-webhooks --no-default-features \
        --bin finch-webhooks \
    && install -D -m 0755 target/release/finch-webhooks /out/finch-webhooks

FROM chef AS emulator-builder
COPY --from=planner /build/recipe.json recipe.json
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo chef cook --release --locked --package finch-emulator --recipe-path recipe.json
# The whole workspace, because cargo reads every member's manifest and targets.
COPY Cargo.toml Cargo.lock ./
COPY src ./src
COPY crates ./crates
RUN --mount=type=cache,target=/usr/local/cargo/registry,sharing=locked \
    cargo build --release --locked --package finch-emulator --bin finch-emulator \
    && install -D -m 0755 target/release/finch-emulator /out/finch-emulator

# The Finch emulator for the local stack (deploy/docker-compose.yml); never
# deployed. Its webhooks go to plain-HTTP local targets, and any HTTPS target
# is verified against the roots compiled into it, so it needs no packages.
FROM debian:${DEBIAN_RELEASE}-slim AS emulator
COPY --from=emulator-builder /out/finch-emulator /usr/local/bin/finch-emulator
USER 10001:10001
EXPOSE 4010
ENTRYPOINT ["finch-emulator"]
CMD ["--listen", "0.0.0.0:4010"]

FROM debian:${DEBIAN_RELEASE}-slim AS runtime
# ca-certificates: an amqps:// broker is verified against the system trust
# store (rustls-platform-verifier); Finch's API against the Mozilla roots
# compiled into the binary (webpki-roots). Versions are left to the
# Debian release so a rebuild picks up security updates.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --system --gid 10001 finch \
    && useradd --system --uid 10001 --gid finch --no-create-home \
        --home-dir /nonexistent --shell /usr/sbin/nologin finch
COPY --from=builder /out/finch-webhooks /usr/local/bin/finch-webhooks

# Numeric so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001

ENV LOG_FORMAT=json \
    LISTEN_ADDR=0.0.0.0:8080 \
    WORKER_LISTEN_ADDR=0.0.0.0:9091

# 8080 ingress, 9091 worker health/metrics.
EXPOSE 8080 9091

# Probes the ingress port. Other roles override it: the worker probes
# http://127.0.0.1:9091/healthz, one-shot roles disable it.
HEALTHCHECK --interval=10s --timeout=5s --start-period=15s --retries=3 \
    CMD ["finch-webhooks", "health"]

ENTRYPOINT ["finch-webhooks"]
CMD ["serve"]
