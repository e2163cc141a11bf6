-- What a violation puts at risk (the rule's `impact` value, as an exact decimal in text);
-- null when the rule declares no impact or the value was null for the key.
ALTER TABLE violations ADD COLUMN impact TEXT;
