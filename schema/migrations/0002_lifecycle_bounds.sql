-- Every create has a deadline that any process enforces, and every instance says how often it
-- beats, so that others judge its liveness by its own interval rather than theirs.

ALTER TABLE instances
  ADD COLUMN heartbeat_interval_s integer NOT NULL DEFAULT 10 CHECK (heartbeat_interval_s > 0);

ALTER TABLE hosts ADD COLUMN provision_deadline timestamptz;

-- Creates in flight during the upgrade get the default PROVISION_TIMEOUT from their start.
UPDATE hosts SET provision_deadline = created_at + interval '600 seconds'
  WHERE status IN ('provisioning', 'pulling_image', 'creating_vm', 'bootstrapping');

CREATE INDEX hosts_provisioning_idx ON hosts (provision_deadline)
  WHERE status IN ('provisioning', 'pulling_image', 'creating_vm', 'bootstrapping');
