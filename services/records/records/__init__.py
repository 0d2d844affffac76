"""Records: the clinic's memory of each patient."""

SERVICE = "records"
