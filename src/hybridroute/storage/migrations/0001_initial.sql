-- hybridroute's records in PostgreSQL: spend and budget events (the ledger), alert transitions,
-- gateway events and hourly traffic (the operations reports), and the control plane's state,
-- routing-configuration versions and audit chain. Costs are integer counts of 10^-10 of the
-- currency, so sums are exact.

CREATE TABLE charges (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    day TEXT NOT NULL,
    decision_id TEXT NOT NULL,
    tenant TEXT NOT NULL,
    operation_type TEXT NOT NULL,
    route TEXT NOT NULL,
    model TEXT NOT NULL,
    kind TEXT NOT NULL,
    input_tokens BIGINT NOT NULL,
    output_tokens BIGINT NOT NULL,
    estimated BOOLEAN NOT NULL,
    cost_units BIGINT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX charges_by_day ON charges (day);

CREATE TABLE budget_events (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    budget TEXT NOT NULL,
    period TEXT NOT NULL,
    "window" TEXT NOT NULL,
    threshold TEXT NOT NULL,
    level DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    utilisation DOUBLE PRECISION NOT NULL,
    spent_units BIGINT NOT NULL,
    limit_units BIGINT NOT NULL,
    currency TEXT NOT NULL
);
CREATE INDEX budget_events_by_time ON budget_events (at);

CREATE TABLE alert_events (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    alert_id TEXT NOT NULL,
    rule TEXT NOT NULL,
    severity TEXT NOT NULL,
    transition TEXT NOT NULL,
    labels TEXT NOT NULL,
    summary TEXT NOT NULL,
    value DOUBLE PRECISION,
    acknowledged_by TEXT
);
CREATE INDEX alert_events_by_time ON alert_events (at);

CREATE TABLE gateway_events (
    id BIGSERIAL PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    detail TEXT NOT NULL
);
CREATE INDEX gateway_events_by_time ON gateway_events (at);

CREATE TABLE traffic_hours (
    hour BIGINT PRIMARY KEY,
    data TEXT NOT NULL
);

CREATE TABLE control_state (
    key TEXT PRIMARY KEY,
    value TEXT NOT NULL
);

CREATE TABLE config_versions (
    version INTEGER PRIMARY KEY,
    at DOUBLE PRECISION NOT NULL,
    author TEXT NOT NULL,
    comment TEXT NOT NULL,
    document TEXT NOT NULL,
    diff TEXT NOT NULL
);

CREATE TABLE audit_records (
    id BIGSERIAL PRIMARY KEY,
    seq BIGINT NOT NULL,
    at DOUBLE PRECISION NOT NULL,
    kind TEXT NOT NULL,
    actor TEXT NOT NULL,
    subject TEXT,
    data TEXT NOT NULL,
    prev TEXT NOT NULL,
    digest TEXT NOT NULL
);
CREATE INDEX audit_records_by_time ON audit_records (at);
