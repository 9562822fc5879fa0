-- Fast creates: templates (one saved guest per image digest and size, built once across every
-- process sharing the database) and the warm pool (host rows kept ready for a claim).

CREATE TABLE templates (
  id            uuid PRIMARY KEY,
  image_digest  text NOT NULL,
  cpus          integer NOT NULL CHECK (cpus > 0),
  memory_mib    integer NOT NULL CHECK (memory_mib > 0),
  disk_gb       integer CHECK (disk_gb > 0),
  ssh_username  text NOT NULL,
  -- The reference of the create that first wanted this template; a newer digest of the same
  -- reference makes it collectable.
  image         text NOT NULL,
  status        text NOT NULL CHECK (status IN ('building', 'ready', 'failed')),
  owner_id      uuid REFERENCES instances (id) ON DELETE SET NULL,
  last_error    text NOT NULL DEFAULT '',
  -- failed: not rebuilt before this; NULL: never (the image cannot be cloned).
  retry_after   timestamptz,
  created_at    timestamptz NOT NULL,
  updated_at    timestamptz NOT NULL,
  ready_at      timestamptz,
  last_used_at  timestamptz NOT NULL
);
-- One template per key whatever its status: the row is the lock that makes one process build.
CREATE UNIQUE INDEX templates_key_idx
  ON templates (image_digest, cpus, memory_mib, COALESCE(disk_gb, 0), ssh_username);

-- A port is leased either to a host or to the boot of a template guest.
ALTER TABLE ssh_ports ALTER COLUMN host_id DROP NOT NULL;
ALTER TABLE ssh_ports
  ADD COLUMN template_id uuid UNIQUE REFERENCES templates (id) ON DELETE CASCADE;
ALTER TABLE ssh_ports
  ADD CONSTRAINT ssh_ports_one_owner CHECK ((host_id IS NULL) <> (template_id IS NULL));

-- Warm-pool members are host rows nobody has claimed yet; how a create was served is kept
-- for replays (X-Litterbox-Create-Path).
ALTER TABLE hosts ADD COLUMN pooled boolean NOT NULL DEFAULT false;
ALTER TABLE hosts ADD COLUMN create_path text CHECK (create_path IN ('pool', 'clone', 'boot'));
-- Rows created before this version were all booted.
UPDATE hosts SET create_path = 'boot';

-- A claim takes the oldest active member of a key; a refill counts the key's live members.
CREATE INDEX hosts_pool_idx ON hosts (image_digest, cpus, memory_mib, status, id) WHERE pooled;
