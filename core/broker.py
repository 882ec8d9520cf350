"""Celery broker settings shared by the producer (scheduler) and the consumers (workers).

Both sides must agree on key prefix, transport options and serializer, so they are
defined once here.
"""

from __future__ import annotations

from typing import Any

from core.config import Settings
from core.names import RedisKeys


def task_id(job_id: str, attempt: int) -> str:
    """The Celery task id of a job's attempt: a message left from an older attempt is known
    by its id alone."""
    return f"{job_id}.{attempt}"


def job_id_of_task(task: str) -> str:
    return task.rsplit(".", 1)[0]


def flag_ttl_s(settings: Settings) -> int:
    """How long the per-job keys (cancel flag, current attempt, remote id) live: past the
    longest run of any attempt that may still read them."""
    return settings.job_time_limit_s * 2


def celery_config(settings: Settings) -> dict[str, Any]:
    keys = RedisKeys(settings.namespace)
    # A running job outliving the visibility timeout would be delivered a second time;
    # keep it above the hard time limit.
    visibility_timeout_s = settings.job_time_limit_s + 600
    transport = {
        "global_keyprefix": keys.celery_prefix,
        "queue_order_strategy": "priority",
        "visibility_timeout": visibility_timeout_s,
        "socket_timeout": 30,
        "socket_connect_timeout": 10,
        "health_check_interval": 10,
    }
    return {
        "broker_url": settings.redis_url,
        "broker_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "visibility_timeout": visibility_timeout_s,
        "result_backend": None,
        "task_ignore_result": True,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_create_missing_queues": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_time_limit": settings.job_time_limit_s,
        "worker_prefetch_multiplier": 1,
        "worker_disable_prefetch": True,
        "worker_send_task_events": False,
        "worker_enable_remote_control": False,
        "worker_hijack_root_logger": False,
        "worker_cancel_long_running_tasks_on_connection_loss": False,
        "worker_soft_shutdown_timeout": 10.0,
    }
