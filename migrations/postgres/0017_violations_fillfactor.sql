-- Room on each page of `violations` for the new version of a row updated in place: every run
-- rewrites each open violation it sees again (last seen, occurrences, message, evidence), and
-- none of those columns is indexed, so with room on the page PostgreSQL updates it there
-- (a HOT update: no index entry, and the old version is reclaimed with the page, without
-- waiting for vacuum). With 100,000 open violations seen again six times, 85 % of the
-- updates became HOT instead of none, each round took 1-2.5 s instead of 3-6 s, and the table
-- grew half as much (bench/RESULTS.md). New pages only; SQLite updates rows in place anyway.
ALTER TABLE violations SET (fillfactor = 80);
