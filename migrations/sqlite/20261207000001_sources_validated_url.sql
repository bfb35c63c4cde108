-- The URL (after redirects) whose response carried a source's validators. A later
-- conditional GET sends them to that URL only, and takes a 304 only from it: sent on
-- every hop, a redirect that now leads elsewhere could answer 304 for a different
-- image. Null for records made before: their validators are not sent (a full
-- download, still reused when its bytes hash the same).
alter table sources add column validated_url text;
