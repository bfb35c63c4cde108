-- The stable code of an image's last failure (`timeout`, `http_error`, `undecodable`,
-- ...) beside its message, so clients and metrics need not parse the wording.
alter table images add column error_code text;
