-- The read model's tables. {{schema}} is replaced by the configured schema
-- (a validated, quoted identifier). Names use the "C" collation so that
-- ORDER BY and paging (name > after) follow byte order, as the memory store
-- does, whatever the database's default collation.

-- checkpoint holds exactly one row: the stream sequence of the last applied
-- record, written in the same transaction as the change it made.
CREATE TABLE {{schema}}.checkpoint (
    only_row boolean PRIMARY KEY DEFAULT true CHECK (only_row),
    sequence bigint  NOT NULL CHECK (sequence >= 0)
);
INSERT INTO {{schema}}.checkpoint (only_row, sequence) VALUES (true, 0);

-- keys holds the live API keys. Never a secret nor its hash.
CREATE TABLE {{schema}}.keys (
    project     text COLLATE "C" NOT NULL,
    name        text COLLATE "C" NOT NULL,
    id          text NOT NULL,
    description text NOT NULL,
    hint        text NOT NULL,
    expires_at  timestamptz,
    created_at  timestamptz NOT NULL,
    PRIMARY KEY (project, name),
    UNIQUE (project, id)
);

-- deployments holds the live deployments.
CREATE TABLE {{schema}}.deployments (
    project       text COLLATE "C" NOT NULL,
    name          text COLLATE "C" NOT NULL,
    id            text NOT NULL,
    model         text NOT NULL,
    upstream_url  text NOT NULL,
    regions       text[] NOT NULL,
    status        text NOT NULL CHECK (status IN ('DEPLOYING', 'DEPLOYED', 'FAILED')),
    status_reason text NOT NULL,
    auth_enabled  boolean NOT NULL,
    created_at    timestamptz NOT NULL,
    PRIMARY KEY (project, name),
    UNIQUE (project, id)
);

-- links holds which live key is linked to which live deployment. Deleting
-- either side deletes the link (ON DELETE CASCADE), so no link outlives
-- its key or its deployment.
CREATE TABLE {{schema}}.links (
    project         text COLLATE "C" NOT NULL,
    deployment_name text COLLATE "C" NOT NULL,
    key_name        text COLLATE "C" NOT NULL,
    key_id          text NOT NULL,
    PRIMARY KEY (project, deployment_name, key_name),
    FOREIGN KEY (project, deployment_name)
        REFERENCES {{schema}}.deployments (project, name) ON DELETE CASCADE,
    FOREIGN KEY (project, key_id)
        REFERENCES {{schema}}.keys (project, id) ON DELETE CASCADE
);
-- A key's deployments, in name order; also serves the cascade from keys.
CREATE INDEX links_by_key ON {{schema}}.links (project, key_id, deployment_name);
