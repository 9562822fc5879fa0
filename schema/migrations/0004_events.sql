-- Host events (API.md "Events"): one row per state change of a caller's host, written by a
-- trigger in the transaction that makes the change, so that no change commits without its
-- event and no event without its change. Pool members are nobody's hosts: they have no events
-- until a claim hands one to a caller (then a 'created').

CREATE TABLE events (
  id       bigserial PRIMARY KEY,
  host_id  uuid NOT NULL,  -- no foreign key: a deleted host keeps its history
  type     text NOT NULL CHECK (type IN ('created', 'status', 'deleted', 'died')),
  status   text NOT NULL,
  at       timestamptz NOT NULL,
  -- What a reader may see about the change; never keys or credentials.
  detail   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX events_host_idx ON events (host_id, id);
CREATE INDEX events_at_idx ON events (at);

-- The newest id pruned for retention (0: none): a reader resuming after an older id has
-- missed events and is told so instead of getting a silent gap.
CREATE TABLE event_horizon (
  singleton      boolean PRIMARY KEY DEFAULT true CHECK (singleton),
  pruned_through bigint NOT NULL
);
INSERT INTO event_horizon VALUES (true, 0);

-- Event ids must become visible in id order: a reader that saw id n never later finds an
-- n - 1 committed after it. Writers therefore take one transaction-scoped lock before
-- drawing an id and hold it to their commit (host changes are few and their transactions
-- short). The class is the two-key advisory space; pg_store's pool lock uses another class.
CREATE FUNCTION record_host_event() RETURNS trigger LANGUAGE plpgsql AS $$
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
  INSERT INTO events (host_id, type, status, at, detail)
    VALUES (h.id, kind, h.status,
            CASE WHEN TG_OP = 'DELETE' THEN statement_timestamp() ELSE h.updated_at END,
            jsonb_build_object('last_error', h.last_error))
    RETURNING id INTO id_out;
  -- Delivered at commit only, to every replica's streams; the table stays the truth.
  PERFORM pg_notify('litterbox_events', id_out::text);
  RETURN NULL;
END;
$$;

CREATE TRIGGER hosts_events
  AFTER INSERT OR UPDATE OF status, pooled OR DELETE ON hosts
  FOR EACH ROW EXECUTE FUNCTION record_host_event();
