-- The seed tables of the CRM/HRMS/Finance sync design (a copy of tests/fixtures/seed.sql).
CREATE TABLE public.credit_configurations (
    config_id      text PRIMARY KEY,
    tenant_id      text,
    operation_code text,
    credit_cost    numeric(10, 2) NOT NULL DEFAULT 1.00,
    is_active      boolean NOT NULL DEFAULT true,
    updated_by     text,
    meta           jsonb,
    updated_at     timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE public.roles (
    role_id     text PRIMARY KEY,
    tenant_id   text,
    role_name   text NOT NULL,
    permissions text[] NOT NULL DEFAULT '{}',
    is_active   boolean NOT NULL DEFAULT true
);
CREATE TABLE public.users (
    user_id   bigint PRIMARY KEY,
    tenant_id text,
    email     text NOT NULL,
    name      text,
    tags      text[],
    joined_on date
);
