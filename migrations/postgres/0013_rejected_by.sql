-- Who rejected a repair: `approved_by` keeps a first approval under four eyes, so a rejection
-- needs its own column for the card and `repairs show` to name the person.
ALTER TABLE repairs ADD COLUMN rejected_by TEXT;
