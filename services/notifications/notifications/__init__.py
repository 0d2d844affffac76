"""Notifications: email to patients and on-call staff."""

SERVICE = "notifications"
