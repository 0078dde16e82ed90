-- The usage projection (issue 16, docs/usage.md): the gateways' flushes
-- from the usage stream, folded into minute buckets. It follows its own
-- stream, so it has its own checkpoint; usage_senders keeps the last flush
-- applied per gateway run, so a flush stored twice counts once.
CREATE TABLE {{schema}}.usage_checkpoint (
    one            boolean     PRIMARY KEY DEFAULT true CHECK (one),
    sequence       bigint      NOT NULL DEFAULT 0,
    stream         text        NOT NULL DEFAULT '',
    stream_created timestamptz
);
INSERT INTO {{schema}}.usage_checkpoint DEFAULT VALUES;

CREATE TABLE {{schema}}.usage_senders (
    sender   text   PRIMARY KEY,
    sequence bigint NOT NULL
);

-- minute is Unix seconds, a multiple of 60.
CREATE TABLE {{schema}}.usage_buckets (
    project           text   NOT NULL,
    deployment        text   NOT NULL,
    key_name          text   NOT NULL,
    minute            bigint NOT NULL,
    ok                bigint NOT NULL,
    client_errors     bigint NOT NULL,
    server_errors     bigint NOT NULL,
    refused           bigint NOT NULL,
    prompt_tokens     bigint NOT NULL,
    completion_tokens bigint NOT NULL,
    PRIMARY KEY (project, deployment, key_name, minute)
);
CREATE INDEX usage_buckets_key ON {{schema}}.usage_buckets (project, key_name, minute);

-- last_used is Unix nanoseconds.
CREATE TABLE {{schema}}.usage_last (
    project    text   NOT NULL,
    deployment text   NOT NULL,
    key_name   text   NOT NULL,
    last_used  bigint NOT NULL,
    PRIMARY KEY (project, deployment, key_name)
);
