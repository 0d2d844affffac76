"""The library every clinic service is built on.

Modules, one reason each:
  config      settings from environment variables, read in one place
  events      the event envelope and a schema for every event type
  correlation the correlation id of the request or event being handled
  db          engines, transactions and migrations
  outbox      the transactional outbox and its relay
  inbox       the idempotent inbox and the consumer
  bus         RabbitMQ topology and connections
  web         the Flask app factory, error shape, health checks
  auth        staff tokens, roles, device tokens
  errors      domain exceptions, translated to HTTP once in web
  worker      a service's worker process: consumer + relay
  localservers RabbitMQ / PostgreSQL started from local packages
  cli         the `clinic` command
"""
