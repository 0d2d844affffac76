"""Notifications' use cases, each given a unit of work (clinic.unit_of_work)."""
