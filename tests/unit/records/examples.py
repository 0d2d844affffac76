"""What the unit tests of records' use cases are about: a patient, a drug, and the moment it all happens."""

from datetime import date, datetime, timezone
from decimal import Decimal

NOW = datetime(2026, 3, 2, 14, 30, tzinfo=timezone.utc)
ANA = {"given_name": "Ana", "family_name": "Reyes", "birth_date": date(1984, 3, 9), "sex": "female", "email": "ana@example.org",
       "phone": None, "preferred_contact": "email", "email_opt_out": False}
# As a plan's schema loads it: the dose a Decimal, as the neurologist typed it.
KETOROLAC = {"name": " ketorolac ", "dose": Decimal("30.0"), "unit": "mg", "route": "IV", "purpose": "pain", "rate": None,
             "max_per_24h": Decimal("120")}
