-- Example schema for the postgres service of docker-compose.yml: a business
-- table and its outbox (Debezium EventRouter column names), the relay's
-- role with the minimal rights, and the publication (created here by the
-- owner of the tables, so the relay itself needs no CREATE right).
CREATE TABLE IF NOT EXISTS public.orders (
  id bigserial PRIMARY KEY,
  customer text NOT NULL,
  total numeric(10,2) NOT NULL
);

-- payload is text (or json): jsonb would rewrite the bytes the relay sends.
CREATE TABLE IF NOT EXISTS public.outbox (
  id uuid PRIMARY KEY DEFAULT gen_random_uuid(),
  aggregatetype text NOT NULL,
  aggregateid text NOT NULL,
  type text NOT NULL,
  payload text,
  created_at timestamptz NOT NULL DEFAULT now()
);

-- Streaming a logical slot needs the REPLICATION attribute; the relay
-- creates its slot on first start. It reads no table data.
CREATE ROLE outboxrelay WITH LOGIN REPLICATION PASSWORD 'relay-secret';
GRANT CONNECT ON DATABASE shop TO outboxrelay;
CREATE PUBLICATION outboxrelay FOR TABLE public.outbox WITH (publish = 'insert');
