-- Hosts, idempotency keys, SSH port leases and the control-plane instances that own work.
-- Every invariant that several litterboxd processes must agree on is a constraint here.

CREATE TABLE instances (
  id            uuid PRIMARY KEY,
  hostname      text NOT NULL,
  pid           integer NOT NULL,
  started_at    timestamptz NOT NULL,
  heartbeat_at  timestamptz NOT NULL
);

CREATE TABLE hosts (
  id                 uuid PRIMARY KEY,
  name               text NOT NULL UNIQUE,
  status             text NOT NULL CHECK (status IN ('provisioning', 'pulling_image',
                       'creating_vm', 'bootstrapping', 'active', 'deleting', 'error')),
  provider           text NOT NULL,
  image              text NOT NULL,
  image_digest       text,
  instance_type      text,
  cpus               integer NOT NULL CHECK (cpus > 0),
  memory_mib         integer NOT NULL CHECK (memory_mib > 0),
  disk_gb            integer CHECK (disk_gb > 0),
  ssh_host           text NOT NULL DEFAULT '',
  ssh_port           integer NOT NULL DEFAULT 0,
  internal_ssh_host  text,
  ssh_username       text NOT NULL,
  known_hosts        text NOT NULL DEFAULT '',
  last_error         text NOT NULL DEFAULT '',
  -- When set, expires_at is (re)stamped as activated_at + lease_seconds on activation.
  lease_seconds      bigint CHECK (lease_seconds > 0),
  expires_at         timestamptz,
  -- The instance driving a create; NULL once the host is active or failed.
  owner_id           uuid REFERENCES instances (id) ON DELETE SET NULL,
  created_at         timestamptz NOT NULL,
  updated_at         timestamptz NOT NULL,
  activated_at       timestamptz
);

-- Listing is newest first with an id cursor; UUIDv7 ids sort by creation time.
CREATE INDEX hosts_status_id_idx ON hosts (status, id DESC);
CREATE INDEX hosts_expires_at_idx ON hosts (expires_at) WHERE expires_at IS NOT NULL;
CREATE INDEX hosts_owner_idx ON hosts (owner_id) WHERE owner_id IS NOT NULL;

CREATE TABLE idempotency_keys (
  namespace    text NOT NULL,
  key          text NOT NULL,
  fingerprint  text NOT NULL,
  -- Deferred: a create claims its key before inserting the host row, so that a concurrent
  -- claim of the same key waits on the key and never inserts a second host.
  host_id      uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE DEFERRABLE INITIALLY DEFERRED,
  created_at   timestamptz NOT NULL,
  expires_at   timestamptz NOT NULL,
  PRIMARY KEY (namespace, key)
);
CREATE INDEX idempotency_keys_host_idx ON idempotency_keys (host_id);
CREATE INDEX idempotency_keys_expires_idx ON idempotency_keys (expires_at);

-- One row per forwarded SSH port; the primary key is what makes two creates never share one.
CREATE TABLE ssh_ports (
  port        integer PRIMARY KEY CHECK (port > 0 AND port < 65536),
  host_id     uuid NOT NULL UNIQUE REFERENCES hosts (id) ON DELETE CASCADE,
  leased_at   timestamptz NOT NULL
);
