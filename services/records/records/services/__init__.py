"""Records' use cases, one module per concern: patients, diagnoses, plans, diary, encounters.

Each write is a function given a unit of work (clinic.unit_of_work: one transaction, its outbox,
the request's PHI audit and the clock) and the command; the HTTP views and the event handlers
only call them. Reads take a connection (clinic.web.reading in a view).
"""
