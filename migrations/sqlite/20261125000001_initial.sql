-- pixbatch's own tables. The job queue's tables (Jobs, Workers) belong to apalis and
-- are created by its own migrations; ours are tracked in _pixbatch_migrations so the
-- two migration histories never see each other.

-- One uploaded CSV.
create table requests (
    id              text primary key,                 -- UUIDv7
    status          text not null check (status in
                        ('Pending', 'Processing', 'Completed',
                         'CompletedWithErrors', 'Failed', 'Cancelled')),
    quality         text not null,                    -- "50" or "relative:50%"
    webhook_url     text,
    header          text not null,                    -- JSON array: the input columns in order
    urls_column     integer not null,                 -- index of Input Image Urls in header
    input_key       text not null,                    -- blob key of the uploaded CSV
    output_key      text,                             -- blob key of the output CSV, once final
    total           integer not null,                 -- images in the request
    succeeded       integer not null default 0,
    failed          integer not null default 0,
    remaining       integer not null,                 -- images still pending in this run
    run             integer not null default 1,       -- bumped by retry; guards the completion
    created_at      text not null,
    started_at      text,
    finished_at     text,
    check (remaining >= 0)
);

-- One CSV row, in input order, with every cell so the output can repeat it.
create table products (
    request_id      text not null references requests(id) on delete cascade,
    row             integer not null,                 -- 0-based data row
    line            integer not null,                 -- physical line in the upload
    serial          text not null,
    product_name    text not null,
    cells           text not null,                    -- JSON array, header order
    primary key (request_id, row)
);

-- One image: one URL at one position of one row.
create table images (
    id              integer primary key autoincrement,
    request_id      text not null references requests(id) on delete cascade,
    row             integer not null,
    position        integer not null,                 -- 0-based position in the row's URL list
    input_url       text not null,
    state           text not null default 'pending' check (state in
                        ('pending', 'succeeded', 'failed', 'cancelled')),
    attempts        integer not null default 0,       -- tries so far, every one counted
    last_error      text,
    output_key      text,
    input_bytes     integer,
    output_bytes    integer,
    width           integer,
    height          integer,
    report          text,                             -- JSON: what the transform did
    started_at      text,
    finished_at     text,
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
    attempts        integer not null default 0,
    next_attempt_at text,
    created_at      text not null,
    finished_at     text
);
create index webhook_events_request on webhook_events (request_id);

-- Every delivery try, for the delivery log.
create table webhook_attempts (
    id              integer primary key autoincrement,
    event_id        text not null references webhook_events(id) on delete cascade,
    attempted_at    text not null,
    http_status     integer,
    error           text,
    duration_ms     integer not null
);
create index webhook_attempts_event on webhook_attempts (event_id);
