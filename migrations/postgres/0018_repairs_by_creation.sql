-- Repairs by when they were planned: `audit verify --since` checks that every repair planned
-- after the head it starts from has its entries, without reading the older ones.
CREATE INDEX repairs_created ON repairs (created_us);
