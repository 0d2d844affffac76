"""Scheduling: infusion and exam rooms, office hours, appointments."""

SERVICE = "scheduling"
