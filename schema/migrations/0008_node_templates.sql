-- Several nodes (issue 14): a template is saved on one node and only hosts placed there are
-- cloned from it. NULL for rows from before: they belong to the only node there was. A node's
-- removal takes its template rows with it (their files were on that node).

ALTER TABLE templates ADD COLUMN node_id uuid REFERENCES nodes (id) ON DELETE CASCADE;
UPDATE templates SET node_id = (SELECT id FROM nodes ORDER BY created_at, id LIMIT 1);
