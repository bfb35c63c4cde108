-- Whether the upload began with a UTF-8 byte order mark (Excel's "CSV UTF-8"): the
-- output CSV then begins with one too, so the spreadsheet that wrote the file reads
-- its product names back as UTF-8 rather than as its legacy code page.
alter table requests add column bom integer not null default 0;
