-- Rights of the runtime database user (`serve`, `worker`, operator commands):
-- rows only, no DDL, no CREATEDB. Run as the user that runs `migrate` (the
-- schema owner), after creating the runtime user, for example:
--
--   CREATE ROLE finch_runtime LOGIN PASSWORD '...';
--   psql "$MIGRATE_DATABASE_URL" -v database=finch_webhooks \
--        -v runtime_user=finch_runtime -f deploy/postgres/runtime-grants.sql
--
-- tests/api/least_privilege.rs runs `serve` and `worker` as a user with
-- exactly these grants.

-- Postgres 15 and later already deny PUBLIC the right to create in public.
REVOKE CREATE ON SCHEMA public FROM PUBLIC;
GRANT CONNECT ON DATABASE :"database" TO :"runtime_user";
GRANT USAGE ON SCHEMA public TO :"runtime_user";
GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO :"runtime_user";
GRANT USAGE, SELECT ON ALL SEQUENCES IN SCHEMA public TO :"runtime_user";
-- The runtime roles read which migrations ran; only `migrate` records them.
REVOKE INSERT, UPDATE, DELETE ON _sqlx_migrations FROM :"runtime_user";
-- Tables and sequences that later migrations add get the same rights.
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT SELECT, INSERT, UPDATE, DELETE ON TABLES TO :"runtime_user";
ALTER DEFAULT PRIVILEGES IN SCHEMA public
    GRANT USAGE, SELECT ON SEQUENCES TO :"runtime_user";
