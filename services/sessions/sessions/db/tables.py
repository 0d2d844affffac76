"""Sessions' core tables. (Filled in with the session lifecycle.)"""

import sqlalchemy as sa

from clinic.audit import audit_table
from clinic.db import messaging_tables

metadata = sa.MetaData()
outbox, inbox = messaging_tables(metadata)
audit_log = audit_table(metadata)
