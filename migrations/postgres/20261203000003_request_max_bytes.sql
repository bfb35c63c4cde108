-- Per-request byte cap of each output (`max_bytes`), NULL for none.
alter table requests add column max_bytes bigint;
