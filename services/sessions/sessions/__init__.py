"""Sessions: live infusion sessions, bedside monitors, vital signs, alerts, discharge."""

SERVICE = "sessions"
