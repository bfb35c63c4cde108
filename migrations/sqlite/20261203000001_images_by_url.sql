-- The image job's same-URL lookup (`Db::duplicates_of`: pending images of one request
-- with one URL, in row order) had only (request_id, ...) prefixes to go by, so every
-- job read all images of its request: quadratic in the request's size. With row and
-- position last, the index also yields the order, so SQLite's planner prefers it.
create index images_request_url on images (request_id, input_url, state, row, position);
