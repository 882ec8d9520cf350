"""Batch webhooks: an outbox written with the batch's last transition, delivered by the
scheduler with retries, signed by the Standard Webhooks scheme, never to a private address."""
