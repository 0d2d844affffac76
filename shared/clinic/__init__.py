"""The library every clinic service is built on.

Modules, one reason each:
  config        settings from environment variables, read in one place
  events        the event envelope, the event type names and a schema for every event type
  correlation   the correlation id of the request or event being handled
  db            engines, transactions, database errors, copies kept by version
  migrations    a service's Alembic migrations and the messaging tables they start with
  unit_of_work  one transaction of a use case: its connection, outbox, audit and clock
  audit         the PHI access audit every service keeps, and the view decorator that writes it
  outbox        the transactional outbox and its relay
  inbox         the idempotent inbox and the consumer
  bus           RabbitMQ topology and connections
  outages       growing delays between attempts, one log line when an outage begins and one when it ends
  web           the Flask app factory, health checks, the request's unit of work
  http_edge     what every request passes before a view: size, content type, JSON guards, ids
  http_errors   the one error shape, {"error": {"code", "message", "details"}}
  openapi       the OpenAPI documents state what the validators and the edge enforce
  validation    field validators every service's schemas use
  auth          staff tokens, roles, device tokens
  errors        domain exceptions, translated to HTTP once in web
  worker        a service's worker process: consumer, relay and periodic jobs, watched
  metrics       the Prometheus metrics every process exposes
  ops           the ops port (/metrics, /healthz apart from the request threads), `clinic outbox status`
  gunicorn_conf the web server's settings for every service
  localservers  RabbitMQ / PostgreSQL started from local packages
  cli           the `clinic` command
"""
