"""Sessions' rules: no Flask, no database session, no pika.

    rules        the clinic's settings for sessions (NEWS2 thresholds, windows, bounds), as one value
    vitals       a reading: its parameters, their LOINC codes, the bounds of a living person, °F to °C
    news2        the NEWS2 score of a set of readings (Royal College of Physicians, 2017)
    alerts       alert episodes: when a score raises an alert, raises it again, or ends the episode
    care         a session's states and the conditions of its discharge
    medications  the medication administration record's rules: plan, dose, route, unit, 24-hour maxima
"""
