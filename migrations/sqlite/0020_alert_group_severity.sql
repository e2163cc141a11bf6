-- The severity an alert group was last announced with (a group escalates from warning to
-- critical as its rule's error_if is crossed, and announces it once), and the receivers it
-- was sent to while firing (its resolve goes to each of them, whatever the routes say now).
ALTER TABLE alert_groups ADD COLUMN severity TEXT;
ALTER TABLE alert_groups ADD COLUMN receivers TEXT;
-- Each run's status under its rule's thresholds (pass, warn, error, unknown).
ALTER TABLE runs ADD COLUMN status TEXT;
