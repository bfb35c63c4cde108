-- Image updates without index maintenance (PostgreSQL's heap-only tuples).
--
-- Every change of an image's state (the fan-in's pending → succeeded / failed, a
-- retry's failed → pending, a cancel's pending → cancelled) changed a column of two
-- indexes, `images_request_state` and `images_request_url`, so PostgreSQL wrote a new
-- entry into each of the table's four indexes for every image, every time: a retry or
-- a cancel of 100,000 images wrote 400,000 index entries. With no indexed column
-- changing, an update that finds room in its page stays in the heap (HOT) and no
-- index is touched.
--
-- `images_request_state` served only retry and cancel (every failed, or every pending,
-- image of one request): the (request_id, row, position) index serves them as well,
-- reading the request's images once. The same-URL lookup keeps its index without
-- `state`: the pending ones are filtered among the few images with that URL.
drop index images_request_state;
drop index images_request_url;
create index images_request_url on images (request_id, input_url, row, position);

-- Room in each page for the updated versions of its rows (a refused image gains its
-- error, a stored one its key and report): new pages are filled to half.
alter table images set (fillfactor = 50);
