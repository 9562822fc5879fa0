-- Hypervisor nodes (issue 14): each host is placed on one, by free capacity, in the
-- transaction that inserts it. The machine litterboxd drives registers itself as a node at
-- start-up, so a single-machine install has exactly one.

CREATE TABLE nodes (
  id                  uuid PRIMARY KEY,
  uri                 text NOT NULL UNIQUE,            -- the libvirt URI that drives it
  ssh_host            text NOT NULL,                   -- where callers reach its SSH forwards
  -- What the node reports (virNodeGetInfo), refreshed at each registration.
  cpus                integer NOT NULL CHECK (cpus >= 0),
  memory_mib          bigint NOT NULL CHECK (memory_mib >= 0),
  -- The operator's: what guests may not have, and how far vCPUs and memory are overcommitted.
  reserved_cpus       integer NOT NULL DEFAULT 0 CHECK (reserved_cpus >= 0),
  reserved_memory_mib bigint NOT NULL DEFAULT 1024 CHECK (reserved_memory_mib >= 0),
  cpu_overcommit      double precision NOT NULL DEFAULT 16 CHECK (cpu_overcommit > 0),
  memory_overcommit   double precision NOT NULL DEFAULT 1.5 CHECK (memory_overcommit > 0),
  -- active: takes new hosts; cordoned and draining: takes none (draining: being emptied).
  state               text NOT NULL DEFAULT 'active'
                        CHECK (state IN ('active', 'cordoned', 'draining')),
  created_at          timestamptz NOT NULL,
  updated_at          timestamptz NOT NULL,
  last_seen_at        timestamptz NOT NULL
);

-- NULL for rows from before nodes: the first node to register takes them.
ALTER TABLE hosts ADD COLUMN node_id uuid REFERENCES nodes (id);
-- Placement sums what a node's hosts hold.
CREATE INDEX hosts_node_idx ON hosts (node_id) WHERE status <> 'error';
