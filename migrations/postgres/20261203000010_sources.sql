-- Reuse of unchanged images across requests. `sources` remembers, per fetched URL and
-- settings fingerprint, what the origin said about the bytes (its validators and a hash
-- of them) and the output made from them, so a later request can send a conditional
-- GET and, on 304 or the same hash, copy that output instead of decoding and encoding.
-- A row is written in the transaction that marks the image succeeded, after its blob
-- is durable, so no row ever points at an output that was not completely stored.
create table sources (
    url             text not null,
    settings        text not null,                    -- fingerprint of what shapes the output
    etag            text,                             -- the origin's ETag, as sent
    last_modified   text,                             -- the origin's Last-Modified, as sent
    content_hash    text not null,                    -- SHA-256 (hex) of the downloaded bytes
    input_bytes     bigint not null,
    output_key      text not null,                    -- blob key of the output to copy
    output_bytes    bigint not null,
    width           bigint not null,
    height          bigint not null,
    report          text not null,                    -- JSON: what the transform did
    request_id      text not null,                    -- the request that holds output_key; no
                                                      -- foreign key: a missing blob means "do it again"
    updated_at      timestamptz not null,
    primary key (url, settings)
);

-- Whether a request reuses earlier outputs (the upload's `reuse`), and how many it did.
alter table requests add column reuse boolean not null default true;
alter table requests add column reused bigint not null default 0;

-- The request whose output an image's output was copied from, when it was reused.
alter table images add column reused_from text;
