-- A page of a request's images (`/requests/{id}/images?offset=N`) started with
-- `limit … offset N` on the (request_id, row, position) index, which walks the N
-- entries before the page and, on PostgreSQL, visits each one's heap row (the visibility
-- map of a table the jobs rewrite is never all-visible): 153 ms a page deep in a
-- 100,000-image request. Each product now records how many images of its request come
-- before its first one, so the page starts at (row, position) through one probe of
-- this index and reads only its own images. Products are never updated: the column
-- and its index cost one entry per product at the upload.
alter table products add column images_before bigint not null default 0;

-- Requests stored before this migration: every row has at least one image, so the
-- count of the images of earlier rows is that row's first ordinal.
with counts as (
    select p.request_id, p.row,
           coalesce(sum(c.n) over (partition by p.request_id order by p.row
                                   rows between unbounded preceding and 1 preceding), 0)
               as before
      from products p
      left join (select request_id, row, count(*) as n from images
                  group by request_id, row) c
        on c.request_id = p.request_id and c.row = p.row)
update products set images_before = counts.before
  from counts
 where products.request_id = counts.request_id and products.row = counts.row;

create index products_request_images_before on products (request_id, images_before);
