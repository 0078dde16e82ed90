-- Key rotation (issue 16): a key's hint is its current secret's; the
-- previous secret's hint and when it stops working are kept beside it.
-- Never a secret nor its hash. Rows written before this migration are of
-- keys never rotated, which is what the defaults say.
ALTER TABLE {{schema}}.keys
    ADD COLUMN rotated_at         timestamptz,
    ADD COLUMN previous_hint      text NOT NULL DEFAULT '',
    ADD COLUMN previous_not_after timestamptz;
