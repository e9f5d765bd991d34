-- Links refused by a per-type limit (DESIGN rule 3): recorded, never silent.
-- The shared-device case shows up here: one anonymous id kept by one customer and refused
-- for another.
CREATE TABLE IF NOT EXISTS {db}.identity_refusals
(
    id_type      LowCardinality(String),
    id_value     String,
    kept_by      String,
    refused_for  String,
    rule         LowCardinality(String),
    at           DateTime64(3, 'UTC')
)
ENGINE = ReplacingMergeTree
ORDER BY (id_type, id_value, refused_for, at);
