"""The control plane: what operators change while the gateway runs — feature flags, routing
configuration versions, operator actions, rollbacks and the automatic rollback guard — each
persisted, audited and in force from the next decision."""
