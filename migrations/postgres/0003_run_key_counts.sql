-- What a run did with its keys: judged, held back by `grace`, could not judge (an error for
-- that key). Runs recorded before count none.
ALTER TABLE runs ADD COLUMN keys_judged BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN keys_in_grace BIGINT NOT NULL DEFAULT 0;
ALTER TABLE runs ADD COLUMN keys_with_errors BIGINT NOT NULL DEFAULT 0;
