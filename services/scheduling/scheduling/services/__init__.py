"""Scheduling's use cases, one module per concern. Each write is a function that takes a unit of work
(clinic.unit_of_work: one transaction with its outbox, its audit and its clock) and the command:

    booking         book an appointment, reschedule one (the rules of a free room and a free patient)
    lifecycle       cancel, check in, record a no-show
    availability    the free slots for a patient
    during_session  a session's start: the appointment in progress
    after_session   a session's end: the appointment completed, the return visit booked
    rooms           add a room, change one
    calendar        replace the office hours, close a day, open it again
    plan_copies     keep the copy of a patient's treatment plan from records' events
"""
