"""Who may call what, for all four services: the role matrix, written down once.

An operation is "METHOD /path", the path as the service's OpenAPI document writes it. Each names
the identities that may call it: the staff roles from the identity provider's token (front_desk,
nurse, neurologist, admin) or `device`, a bedside monitor with its own device token. Anyone else
is refused: 401 without a valid token, 403 with one that carries none of these.

Plain data on purpose. The views' decorators (clinic.auth.requires_roles, clinic.audit.audited)
look their operation up here; each service's OpenAPI document names the same identities under
`x-clinic-roles`; an app refuses to start when a guarded operation has no entry here, or an entry
names an operation the app does not have (clinic.access); tests/integration/test_role_matrix.py
tries every operation with every identity.

/healthz, /readyz and /metrics are public by design; /docs and /openapi.json follow their own
setting. None of them is here.
"""

MATRIX = {
    "records": {
        # Registering and correcting demographics and contact details is the front desk's job;
        # clinicians look a patient up too.
        "GET /patients": ("front_desk", "nurse", "neurologist"),
        "POST /patients": ("front_desk",),
        "GET /patients/{patient_id}": ("front_desk", "nurse", "neurologist"),
        "PATCH /patients/{patient_id}": ("front_desk",),
        # Diagnoses and treatment plans are the neurologist's decisions; nurses read plans (they give
        # the drugs), the front desk reads no clinical record.
        "GET /patients/{patient_id}/diagnoses": ("neurologist",),
        "POST /patients/{patient_id}/diagnoses": ("neurologist",),
        "PATCH /patients/{patient_id}/diagnoses/{diagnosis_id}": ("neurologist",),
        "GET /patients/{patient_id}/treatment-plans": ("nurse", "neurologist"),
        "POST /patients/{patient_id}/treatment-plans": ("neurologist",),
        "GET /treatment-plans/{plan_id}": ("nurse", "neurologist"),
        "PATCH /treatment-plans/{plan_id}": ("neurologist",),
        "POST /treatment-plans/{plan_id}/activate": ("neurologist",),
        "POST /treatment-plans/{plan_id}/retire": ("neurologist",),
        # The headache diary is kept with the patient by either clinician.
        "GET /patients/{patient_id}/diary": ("nurse", "neurologist"),
        "POST /patients/{patient_id}/diary": ("nurse", "neurologist"),
        "PUT /patients/{patient_id}/diary/{entry_id}": ("nurse", "neurologist"),
        "GET /patients/{patient_id}/diary/summary": ("nurse", "neurologist"),
        "GET /patients/{patient_id}/encounters": ("nurse", "neurologist"),
        # Who looked at whose record: for the administrator, who looks at no record.
        "GET /audit": ("admin",),
    },
    "scheduling": {
        # The front desk books and moves appointments; clinicians see the day.
        "GET /appointments": ("front_desk", "nurse", "neurologist"),
        "POST /appointments": ("front_desk",),
        "GET /appointments/{appointment_id}": ("front_desk", "nurse", "neurologist"),
        "POST /appointments/{appointment_id}/reschedule": ("front_desk",),
        "POST /appointments/{appointment_id}/cancel": ("front_desk",),
        "POST /appointments/{appointment_id}/check-in": ("front_desk",),
        "POST /appointments/{appointment_id}/no-show": ("front_desk",),
        "GET /availability": ("front_desk", "nurse", "neurologist"),
        "GET /board": ("front_desk", "nurse", "neurologist"),
        # Rooms, office hours and closures hold no patient data: every member of staff reads them,
        # the administrator changes them.
        "GET /rooms": ("front_desk", "nurse", "neurologist", "admin"),
        "POST /rooms": ("admin",),
        "GET /rooms/{room_id}": ("front_desk", "nurse", "neurologist", "admin"),
        "PATCH /rooms/{room_id}": ("admin",),
        "GET /office-hours": ("front_desk", "nurse", "neurologist", "admin"),
        "PUT /office-hours": ("admin",),
        "GET /closures": ("front_desk", "nurse", "neurologist", "admin"),
        "POST /closures": ("admin",),
        "DELETE /closures/{day}": ("admin",),
    },
    "sessions": {
        # A bedside monitor posts its readings and nothing else; staff enter readings on the session.
        "POST /vitals": ("device",),
        "GET /board": ("front_desk", "nurse", "neurologist"),
        "GET /sessions": ("front_desk", "nurse", "neurologist"),
        "GET /sessions/{session_id}": ("front_desk", "nurse", "neurologist"),
        # The SpO2 scale a session's readings are scored on (a hypercapnic target) is the neurologist's call.
        "PATCH /sessions/{session_id}": ("neurologist",),
        "POST /sessions/{session_id}/start": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/discharge": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/abort": ("nurse", "neurologist"),
        "GET /sessions/{session_id}/vitals": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/vitals": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/vitals/{reading_id}/void": ("nurse", "neurologist"),
        "GET /sessions/{session_id}/medications": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/medications": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/medications/{medication_id}/void": ("nurse", "neurologist"),
        "GET /sessions/{session_id}/pain-scores": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/pain-scores": ("nurse", "neurologist"),
        # The front desk sees who is visiting (one adult at a time); clinicians let them in and out.
        "GET /sessions/{session_id}/visitors": ("front_desk", "nurse", "neurologist"),
        "POST /sessions/{session_id}/visitors": ("nurse", "neurologist"),
        "POST /sessions/{session_id}/visitors/{visitor_id}/leave": ("nurse", "neurologist"),
        "GET /alerts": ("nurse", "neurologist"),
        "GET /alerts/{alert_id}": ("nurse", "neurologist"),
        "POST /alerts/{alert_id}/acknowledge": ("nurse", "neurologist"),
        # Registering monitors and handing out their tokens is the administrator's.
        "GET /devices": ("admin",),
        "POST /devices": ("admin",),
        "GET /devices/{device_id}": ("admin",),
        "POST /devices/{device_id}/revoke": ("admin",),
        "POST /devices/{device_id}/move": ("admin",),
    },
    "notifications": {
        # The mail log: the front desk and nurses answer "did my email arrive?"; only the
        # administrator sees a contact copy or sends a failed message again.
        "GET /messages": ("front_desk", "nurse", "admin"),
        "GET /messages/{message_id}": ("front_desk", "nurse", "admin"),
        "POST /messages/{message_id}/retry": ("admin",),
        "GET /contacts/{patient_id}": ("admin",),
    },
}
