-- The run whose completion wrote the event. A retry starts a newer run; an older run's
-- event that fails a try afterwards is given up rather than scheduled again (arriving
-- hours later, after the new run's, its status would no longer hold), and redeliver
-- sends only the latest run's event. Null for events written before this column: they
-- are taken as of their request's run.
alter table webhook_events add column run integer;
