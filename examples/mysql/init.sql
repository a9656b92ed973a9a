-- Example schema: a business table and its outbox (Debezium EventRouter
-- column names), plus the relay's user with the minimal grants.
CREATE TABLE IF NOT EXISTS shop.orders (
  id BIGINT AUTO_INCREMENT PRIMARY KEY,
  customer VARCHAR(64) NOT NULL,
  total DECIMAL(10,2) NOT NULL
);

CREATE TABLE IF NOT EXISTS shop.outbox (
  id VARCHAR(36) NOT NULL PRIMARY KEY,
  aggregatetype VARCHAR(255) NOT NULL,
  aggregateid VARCHAR(255) NOT NULL,
  type VARCHAR(255) NOT NULL,
  payload LONGTEXT,
  created_at TIMESTAMP(6) NOT NULL DEFAULT CURRENT_TIMESTAMP(6)
);

-- Streaming needs REPLICATION SLAVE; SHOW BINARY LOGS / SHOW MASTER STATUS
-- need REPLICATION CLIENT (MySQL) or BINLOG MONITOR (MariaDB).
CREATE USER IF NOT EXISTS 'outboxrelay'@'%' IDENTIFIED BY 'relay-secret';
GRANT REPLICATION SLAVE, REPLICATION CLIENT ON *.* TO 'outboxrelay'@'%';
-- Its layout (columns, types, engine) for the checks before streaming; no data.
GRANT REFERENCES ON shop.outbox TO 'outboxrelay'@'%';
