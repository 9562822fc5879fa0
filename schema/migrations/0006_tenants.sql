-- Tenants (API.md "Tenants: scoped keys"): every host belongs to a namespace; scoped keys
-- act in one namespace, under a quota; every state-changing call is audited.

-- Rows from before tenants are the admin tokens' namespace.
ALTER TABLE hosts ADD COLUMN namespace text NOT NULL DEFAULT 'default';
-- Quota counts (live hosts of a namespace) and scoped lists read by namespace.
CREATE INDEX hosts_namespace_idx ON hosts (namespace, id) WHERE NOT pooled;

-- An event carries its host's namespace, so that a scoped stream filters without a join
-- (a deleted host's events outlive its row).
ALTER TABLE events ADD COLUMN namespace text NOT NULL DEFAULT 'default';
CREATE INDEX events_namespace_idx ON events (namespace, id);

CREATE OR REPLACE FUNCTION record_host_event() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
  kind   text;
  h      hosts;
  id_out bigint;
BEGIN
  IF TG_OP = 'INSERT' THEN
    IF NEW.pooled THEN RETURN NULL; END IF;
    kind := 'created';
    h := NEW;
  ELSIF TG_OP = 'DELETE' THEN
    IF OLD.pooled THEN RETURN NULL; END IF;
    kind := 'deleted';
    h := OLD;
  ELSE
    IF NEW.pooled THEN RETURN NULL; END IF;
    IF OLD.pooled THEN
      kind := 'created';  -- a claim: the member becomes a caller's host
    ELSIF OLD.status = NEW.status THEN
      RETURN NULL;
    ELSIF current_setting('litterbox.event_type', true) = 'died' THEN
      kind := 'died';
    ELSE
      kind := 'status';
    END IF;
    h := NEW;
  END IF;
  PERFORM pg_advisory_xact_lock(1819570540, 1);  -- "lbev"
  INSERT INTO events (host_id, type, status, at, detail, namespace)
    VALUES (h.id, kind, h.status,
            CASE WHEN TG_OP = 'DELETE' THEN statement_timestamp() ELSE h.updated_at END,
            jsonb_build_object('last_error', h.last_error), h.namespace)
    RETURNING id INTO id_out;
  -- Delivered at commit only, to every replica's streams; the table stays the truth.
  PERFORM pg_notify('litterbox_events', id_out::text);
  RETURN NULL;
END;
$$;

-- Scoped keys. The key itself is never stored: key_hash is HMAC-SHA256 of it under the
-- deployment's secret, so a copy of the database does not yield usable keys. A revoked key
-- keeps its row (the audit log names it) and never authenticates again.
CREATE TABLE api_keys (
  id              uuid PRIMARY KEY,
  namespace       text NOT NULL,
  name            text NOT NULL DEFAULT '',
  key_hash        text NOT NULL UNIQUE,
  max_hosts       integer,
  max_cpus        integer,
  max_memory_mib  integer,
  created_at      timestamptz NOT NULL,
  revoked_at      timestamptz
);

-- Every key change wakes every replica's key cache (at commit), so that a revocation is
-- refused everywhere within the notification's latency.
CREATE FUNCTION notify_api_keys() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('litterbox_keys', COALESCE(NEW.id, OLD.id)::text);
  RETURN NULL;
END;
$$;
CREATE TRIGGER api_keys_changed AFTER INSERT OR UPDATE OR DELETE ON api_keys
  FOR EACH ROW EXECUTE FUNCTION notify_api_keys();

-- The audit log: one row per state-changing call that passed authentication, in the order
-- the calls completed. Never a secret: no token, key, env or header value is written here.
CREATE TABLE audit_log (
  id          bigserial PRIMARY KEY,
  at          timestamptz NOT NULL,
  key_id      text NOT NULL,  -- a scoped key's id, or "admin:<hash prefix>" for SERVICE_TOKENS
  namespace   text,           -- the scoped key's namespace; NULL for admin tokens
  action      text NOT NULL,
  host_id     uuid,
  request_id  text NOT NULL,
  status      integer NOT NULL
);
CREATE INDEX audit_log_namespace_idx ON audit_log (namespace, id);
