-- HTTP proxies (API.md "HTTP proxies"): named forwarders that add headers the guest never
-- sees. The headers column is read only by the guest-facing proxy; no API returns it.
-- No CHECK constraint on this table: a violation's DETAIL repeats the whole failing row,
-- headers included, into the server's log. The service validates every column instead.

CREATE TABLE http_proxies (
  namespace   text NOT NULL,
  name        text NOT NULL,
  target      text NOT NULL,
  -- A JSON object of header name to value. Write-only: never returned, never logged.
  headers     jsonb NOT NULL,
  created_at  timestamptz NOT NULL,
  PRIMARY KEY (namespace, name)
);

-- Which host may use which proxy. Deleting a proxy or a host detaches it.
CREATE TABLE http_proxy_hosts (
  namespace    text NOT NULL,
  proxy_name   text NOT NULL,
  host_id      uuid NOT NULL REFERENCES hosts (id) ON DELETE CASCADE,
  attached_at  timestamptz NOT NULL,
  PRIMARY KEY (namespace, proxy_name, host_id),
  FOREIGN KEY (namespace, proxy_name) REFERENCES http_proxies (namespace, name) ON DELETE CASCADE
);
-- The guest-facing proxy looks attachments up by host.
CREATE INDEX http_proxy_hosts_host_idx ON http_proxy_hosts (host_id, proxy_name);
