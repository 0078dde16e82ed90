-- The checkpoint names the life of the stream it counts in (issue 10): a
-- stream deleted and created again starts its sequences over, and a bare
-- sequence cannot tell. An empty stream name with a sequence above 0 is a
-- checkpoint written before this migration: the follower treats it as
-- another life and rebuilds the read model once.
ALTER TABLE {{schema}}.checkpoint
    ADD COLUMN stream         text        NOT NULL DEFAULT '',
    ADD COLUMN stream_created timestamptz;
