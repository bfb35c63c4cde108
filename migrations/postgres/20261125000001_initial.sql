-- pixbatch's own tables on PostgreSQL: the same design as migrations/sqlite, column for
-- column, in PostgreSQL's types (bigint for every integer, timestamptz for times; ids
-- and JSON stay text so both backends read them the same way). The job queue's tables
-- live in schema `apalis` and belong to apalis; ours are tracked in _pixbatch_migrations.

-- One uploaded CSV.
create table requests (
    id              text primary key,                 -- UUIDv7
    status          text not null check (status in
                        ('Pending', 'Processing', 'Completed',
                         'CompletedWithErrors', 'Failed', 'Cancelled')),
    quality         text not null,                    -- "50" or "relative:50%"
    webhook_url     text,
    header          text not null,                    -- JSON array: the input columns in order
    urls_column     bigint not null,                  -- index of Input Image Urls in header
    input_key       text not null,                    -- blob key of the uploaded CSV
    output_key      text,                             -- blob key of the output CSV, once final
    total           bigint not null,                  -- images in the request
    succeeded       bigint not null default 0,
    failed          bigint not null default 0,
    remaining       bigint not null,                  -- images still pending in this run
    run             bigint not null default 1,        -- bumped by retry; guards the completion
    created_at      timestamptz not null,
    started_at      timestamptz,
    finished_at     timestamptz,
    check (remaining >= 0)
);

-- One CSV row, in input order, with every cell so the output can repeat it.
create table products (
    request_id      text not null references requests(id) on delete cascade,
    row             bigint not null,                  -- 0-based data row
    line            bigint not null,                  -- physical line in the upload
    serial          text not null,
    product_name    text not null,
    cells           text not null,                    -- JSON array, header order
    primary key (request_id, row)
);

-- One image: one URL at one position of one row.
create table images (
    id              bigint generated always as identity primary key,
    request_id      text not null references requests(id) on delete cascade,
    row             bigint not null,
    position        bigint not null,                  -- 0-based position in the row's URL list
    input_url       text not null,
    state           text not null default 'pending' check (state in
                        ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts        bigint not null default 0,        -- tries so far, every one counted
    last_error      text,
    output_key      text,
    input_bytes     bigint,
    output_bytes    bigint,
    width           bigint,
    height          bigint,
    report          text,                             -- JSON: what the transform did
    started_at      timestamptz,
    finished_at     timestamptz,
    unique (request_id, row, position)
);
create index images_request_state on images (request_id, state);

-- The outbox: one row per completion event; the webhook-id is the primary key.
create table webhook_events (
    id              text primary key,                 -- msg_…, the webhook-id
    request_id      text not null references requests(id) on delete cascade,
    url             text not null,
    payload         text not null,                    -- the exact JSON body sent
    state           text not null default 'pending' check (state in
                        ('pending', 'delivered', 'failed')),
    attempts        bigint not null default 0,
    next_attempt_at timestamptz,
    created_at      timestamptz not null,
    finished_at     timestamptz
);
create index webhook_events_request on webhook_events (request_id);

-- Every delivery try, for the delivery log.
create table webhook_attempts (
    id              bigint generated always as identity primary key,
    event_id        text not null references webhook_events(id) on delete cascade,
    attempted_at    timestamptz not null,
    http_status     bigint,
    error           text,
    duration_ms     bigint not null
);
create index webhook_attempts_event on webhook_attempts (event_id);
