"""The Celery worker fleet: app factory, the `run_job` task, progress, leases and events."""
