-- Least privilege for pricing_store, run by an administrator after `make migrate`
-- (again after any migration that adds a table). Idempotent.
--
--   pricing_store_owner  owns the tables and runs the migrations.
--   pricing_store_app    what services connect as: read and write rows, nothing more.
--
-- Give them passwords yourself: ALTER ROLE pricing_store_app PASSWORD '...';

DO $$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pricing_store_owner') THEN
        CREATE ROLE pricing_store_owner LOGIN;
    END IF;
    IF NOT EXISTS (SELECT FROM pg_roles WHERE rolname = 'pricing_store_app') THEN
        CREATE ROLE pricing_store_app LOGIN;
    END IF;
    EXECUTE format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO pricing_store_app, pricing_store_owner', current_database());
END
$$;

-- The owner creates the tables and the package's own version table in public.
GRANT USAGE, CREATE ON SCHEMA public TO pricing_store_owner;
ALTER TABLE IF EXISTS public.brand_groups OWNER TO pricing_store_owner;
ALTER TABLE IF EXISTS public.models OWNER TO pricing_store_owner;
ALTER TABLE IF EXISTS public.pricing_store_alembic_version OWNER TO pricing_store_owner;
ALTER TABLE IF EXISTS public.pricing_store_generation_leases OWNER TO pricing_store_owner;
ALTER FUNCTION public.pricing_store_notify_change() OWNER TO pricing_store_owner;
ALTER FUNCTION public.pricing_store_send_change(text, json) OWNER TO pricing_store_owner;
ALTER FUNCTION public.pricing_store_notify_brand_groups() OWNER TO pricing_store_owner;
ALTER FUNCTION public.pricing_store_notify_models() OWNER TO pricing_store_owner;

-- The app reads and writes rows (TEMPORARY above lets bulk_upsert stage its rows).
GRANT USAGE ON SCHEMA public TO pricing_store_app;
GRANT SELECT, INSERT, UPDATE ON public.brand_groups, public.models TO pricing_store_app;
GRANT USAGE ON SEQUENCE public.brand_groups_id_seq, public.models_id_seq TO pricing_store_app;
-- Lookups that generate missing rows claim and release leases on the keys they generate.
GRANT SELECT, INSERT, UPDATE, DELETE ON public.pricing_store_generation_leases TO pricing_store_app;
