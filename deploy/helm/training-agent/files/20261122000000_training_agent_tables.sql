-- The four tables the AutoML agents coordinate through. The Training Agent reads `projects` and
-- `datasets`, inserts into `models` and `agent_logs`, and moves `projects.status`.
-- Idempotent, so it can be applied to a database where another agent already created some of them.

create table if not exists public.projects (
    id uuid primary key default gen_random_uuid(),
    name text not null,
    status text not null,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);
-- The orchestrator polls by status.
create index if not exists projects_status_idx on public.projects (status);

create table if not exists public.datasets (
    id uuid primary key default gen_random_uuid(),
    project_id uuid not null references public.projects (id) on delete cascade,
    name text,
    gcs_url text,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);
create index if not exists datasets_project_id_idx on public.datasets (project_id, created_at);

create table if not exists public.models (
    id uuid primary key default gen_random_uuid(),
    project_id uuid not null references public.projects (id) on delete cascade,
    name text not null,
    framework text not null,
    gcs_url text not null,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);
create index if not exists models_project_id_idx on public.models (project_id, created_at);

create table if not exists public.agent_logs (
    id uuid primary key default gen_random_uuid(),
    project_id uuid references public.projects (id) on delete cascade,
    agent_name text not null,
    log_level text not null check (log_level in ('debug', 'info', 'warning', 'error')),
    message text not null,
    metadata jsonb not null default '{}'::jsonb,
    created_at timestamptz not null default now()
);
create index if not exists agent_logs_project_id_idx on public.agent_logs (project_id, created_at desc);
