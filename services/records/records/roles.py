"""Who may do what in records, in one place. Devices have no business here at all."""

from clinic.auth import ADMIN, FRONT_DESK, NEUROLOGIST, NURSE

REGISTRARS = (FRONT_DESK,)                          # register patients, change demographics and contact details
DEMOGRAPHICS_READERS = (FRONT_DESK, NURSE, NEUROLOGIST)
CLINICAL_READERS = (NURSE, NEUROLOGIST)             # plans, diary, encounters
CLINICIANS = (NEUROLOGIST,)                         # diagnoses, plans, activation
DIARY_WRITERS = (NURSE, NEUROLOGIST)
AUDITORS = (ADMIN,)
