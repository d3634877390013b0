-- The seed's task table as a PostgreSQL user would create it (BIGSERIAL, TIMESTAMP), with its two sample rows.
CREATE TABLE IF NOT EXISTS task (
  id BIGSERIAL PRIMARY KEY,
  name VARCHAR(45) NOT NULL DEFAULT '',
  namespace VARCHAR(45) NOT NULL DEFAULT '',
  info TEXT NOT NULL,
  status VARCHAR(45) NOT NULL DEFAULT '',
  user_id BIGINT NOT NULL DEFAULT 0,
  created_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  updated_at TIMESTAMP NOT NULL DEFAULT CURRENT_TIMESTAMP,
  CONSTRAINT uk_name_namespace UNIQUE (name, namespace)
);
INSERT INTO task (id, name, namespace, info, status, user_id) VALUES (1, 'demo-task-1', 'default', '{"image":"alpine","command":["sleep"],"args":["60"]}', 'Normal', 1);
INSERT INTO task (id, name, namespace, info, status, user_id) VALUES (2, 'demo-task-2', 'demo', '{"image":"busybox","command":["sleep"],"args":["3600"]}', 'Normal', 2);
SELECT setval(pg_get_serial_sequence('task', 'id'), 2);
