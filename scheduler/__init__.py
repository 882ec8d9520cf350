"""The scheduler: intake, the SQL store, dispatch, the events consumer and reconciliation."""
