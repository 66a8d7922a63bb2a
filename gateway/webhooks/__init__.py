"""Consent-change webhooks: channels hear of withdrawals, refusals, expiries and erasures.

The consent service's change feed (``GET /v1/changes``) is the durable outbox; the gateway's
dispatcher (:mod:`gateway.webhooks.dispatcher`) reads it past a cursor kept in the gateway's own
database, turns each change into one delivery per webhook whose channel is registered for the
change's purpose, in the same transaction that moves the cursor, and sends due deliveries signed
with each webhook's secret (:mod:`gateway.webhooks.signing`), retrying with backoff until the
receiver answers 2xx or the attempts run out.
"""
