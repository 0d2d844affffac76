"""Sessions' monitoring tables (bedside monitors, readings, alerts, alert episodes) and every query on them.

One piece past the usual length because the tables, their indexes and the statements of the ingest
path are designed together: whatever the number of readings, a monitor's post on PostgreSQL is one
statement locking the started session in the room of the device with the token's hash, one read (the
device, the session, its alert episode, what the device sent before at the batch's times), a second
read only when a partial set needs earlier values, and one write (readings, audit row, and when they
change the episode, alerts and their events). Splitting the statements from the indexes they rely on
would hide that. The reads the session lifecycle uses (the board, discharge) are at the end, each one
query whatever the number of sessions.

A reading is one set of vital signs taken at one time, by a monitor (device_id) or a nurse
(entered_by); each parameter is a column carrying its LOINC code in its comment. A monitor never has
two readings at one time (uq_readings_device_time), which is what makes its re-sent batches harmless.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from datetime import datetime, timedelta
from decimal import Decimal

import sqlalchemy as sa
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection

from clinic.db import UtcDateTime, is_postgresql, row_of, rows_of
from sessions.db.tables import audit_log, metadata, outbox, rooms, sessions
from sessions.domain.news2 import SCORED

# --- the tables ---------------------------------------------------------------------------------

ONE_READING_PER_DEVICE_AND_TIME = "uq_readings_device_time"

devices = sa.Table(
    "devices",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("name", sa.String(100), nullable=False),
    sa.Column("room_id", sa.String(36), sa.ForeignKey("rooms.id", name="fk_devices_room"), nullable=False),
    # SHA-256 of the token (clinic.auth.hash_device_token); the token itself is shown once and kept nowhere.
    sa.Column("token_hash", sa.String(64), nullable=False),
    sa.Column("registered_at", UtcDateTime(), nullable=False),
    sa.Column("registered_by", sa.String(200), nullable=False),
    # When it came to its room (registered or moved): readings measured before belong to another room.
    sa.Column("assigned_at", UtcDateTime(), nullable=False),
    sa.Column("revoked_at", UtcDateTime(), nullable=True),
    sa.Column("revoked_by", sa.String(200), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
    sa.Column("updated_by", sa.String(200), nullable=False),
    sa.Column("version", sa.Integer(), nullable=False, server_default="1"),
    sa.UniqueConstraint("token_hash", name="uq_devices_token_hash"),
)
sa.Index("ix_devices_room_id", devices.c.room_id)

readings = sa.Table(
    "readings",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_readings_session"), nullable=False),
    sa.Column("device_id", sa.String(36), sa.ForeignKey("devices.id", name="fk_readings_device"), nullable=True),
    sa.Column("entered_by", sa.String(200), nullable=True),
    sa.Column("measured_at", UtcDateTime(), nullable=False),
    sa.Column("received_at", UtcDateTime(), nullable=False),
    sa.Column("heart_rate", sa.Integer(), nullable=True, comment="LOINC 8867-4 heart rate, beats per minute"),
    sa.Column("systolic", sa.Integer(), nullable=True, comment="LOINC 8480-6 systolic blood pressure, mmHg"),
    sa.Column("diastolic", sa.Integer(), nullable=True, comment="LOINC 8462-4 diastolic blood pressure, mmHg"),
    sa.Column("respiratory_rate", sa.Integer(), nullable=True, comment="LOINC 9279-1 respiratory rate, breaths per minute"),
    sa.Column("spo2", sa.Integer(), nullable=True, comment="LOINC 2708-6 oxygen saturation (SpO2), percent"),
    sa.Column("on_oxygen", sa.Boolean(), nullable=True, comment="supplemental oxygen (true) or room air (false)"),
    sa.Column("temperature", sa.Numeric(4, 1), nullable=True, comment="LOINC 8310-5 body temperature, degrees Celsius"),
    sa.Column("consciousness", sa.String(20), nullable=True, comment="ACVPU: alert, new_confusion, voice, pain, unresponsive"),
    # The NEWS2 of the set as scored when it arrived (a partial set filled in from the readings just
    # before it): the total, each scored parameter's points, whether all seven were there, which were
    # filled in, and the alert level the score reached.
    sa.Column("news2_total", sa.Integer(), nullable=True),
    sa.Column("news2_points", sa.JSON(), nullable=True),
    sa.Column("news2_complete", sa.Boolean(), nullable=True),
    sa.Column("news2_filled_in", sa.JSON(), nullable=True),
    sa.Column("alert_level", sa.String(20), nullable=True),
    sa.Column("voided_at", UtcDateTime(), nullable=True),
    sa.Column("voided_by", sa.String(200), nullable=True),
    sa.Column("void_reason", sa.String(500), nullable=True),
    sa.UniqueConstraint("device_id", "measured_at", name=ONE_READING_PER_DEVICE_AND_TIME),
    sa.CheckConstraint("device_id IS NOT NULL OR entered_by IS NOT NULL", name="ck_readings_source"),
)
sa.Index("ix_readings_session_measured", readings.c.session_id, readings.c.measured_at)
sa.Index("ix_readings_session_received", readings.c.session_id, readings.c.received_at)

alerts = sa.Table(
    "alerts",
    metadata,
    sa.Column("id", sa.String(36), primary_key=True),
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_alerts_session"), nullable=False),
    sa.Column("room_id", sa.String(36), nullable=False),
    sa.Column("room_name", sa.String(100), nullable=False),
    sa.Column("kind", sa.String(20), nullable=False),
    sa.Column("level", sa.String(20), nullable=False),
    sa.Column("news2_score", sa.Integer(), nullable=True),
    # [{"parameter", "points"}] for the parameters that scored, as the event carries them; [] for a silent monitor.
    sa.Column("scored", sa.JSON(), nullable=False),
    sa.Column("observed_at", UtcDateTime(), nullable=True),
    sa.Column("raised_at", UtcDateTime(), nullable=False),
    # The reading that raised a NEWS2 alert (one alert at most per reading).
    sa.Column("reading_id", sa.String(36), sa.ForeignKey("readings.id", name="fk_alerts_reading"), nullable=True),
    # A silent monitor: since when nothing arrived. One alert per silence, whichever worker sees it first.
    sa.Column("silent_since", UtcDateTime(), nullable=True),
    sa.Column("escalation", sa.Boolean(), nullable=False),
    # An escalation: the alert nobody acknowledged in time (escalated once).
    sa.Column("escalation_of", sa.String(36), sa.ForeignKey("alerts.id", name="fk_alerts_escalation_of"), nullable=True),
    sa.Column("acknowledged_at", UtcDateTime(), nullable=True),
    sa.Column("acknowledged_by", sa.String(200), nullable=True),
    sa.UniqueConstraint("reading_id", name="uq_alerts_reading"),
    sa.UniqueConstraint("session_id", "silent_since", name="uq_alerts_silence"),
    sa.UniqueConstraint("escalation_of", name="uq_alerts_escalation_of"),
    sa.CheckConstraint("kind IN ('news2', 'monitor_silent')", name="ck_alerts_kind"),
    sa.CheckConstraint("level IN ('urgent', 'emergency')", name="ck_alerts_level"),
)
sa.Index("ix_alerts_session_raised", alerts.c.session_id, alerts.c.raised_at)
sa.Index("ix_alerts_unacknowledged", alerts.c.raised_at, postgresql_where=alerts.c.acknowledged_at.is_(None),
         sqlite_where=alerts.c.acknowledged_at.is_(None))

# A session's alert episode (sessions.domain.alerts.Episode): the level raised in it and the calm
# readings since, kept apart from the sessions row. level is null when no episode is open.
alert_episodes = sa.Table(
    "alert_episodes",
    metadata,
    sa.Column("session_id", sa.String(36), sa.ForeignKey("sessions.id", name="fk_alert_episodes_session"), primary_key=True),
    sa.Column("level", sa.String(20), nullable=True),
    sa.Column("calm_readings", sa.Integer(), nullable=False),
    sa.Column("opened_at", UtcDateTime(), nullable=True),
    sa.Column("updated_at", UtcDateTime(), nullable=False),
)

PARAMETER_COLUMNS = ("heart_rate", "systolic", "diastolic", "respiratory_rate", "spo2", "on_oxygen", "temperature", "consciousness")
STARTED = "started"


# --- what a post of readings starts from ---------------------------------------------------------

_context_columns = (
    sessions.c.id.label("session_id"), sessions.c.patient_id, sessions.c.room_id, sessions.c.status, sessions.c.checked_in_at,
    sessions.c.started_at, sessions.c.spo2_scale, sa.func.coalesce(rooms.c.name, sessions.c.room_name).label("room_name"),
    alert_episodes.c.level.label("episode_level"), alert_episodes.c.calm_readings.label("episode_calm_readings"),
    alert_episodes.c.opened_at.label("episode_opened_at"),
)
_session_with_room_and_episode = sessions.outerjoin(rooms, rooms.c.id == sessions.c.room_id) \
    .outerjoin(alert_episodes, alert_episodes.c.session_id == sessions.c.id)
_device_columns = (devices.c.id.label("device_id"), devices.c.room_id.label("device_room_id"), devices.c.assigned_at,
                   devices.c.revoked_at)

_READING_COLUMNS = [column for column in readings.c]
_raised = alerts.alias("raised")
_readings_with_alert = readings.outerjoin(_raised, _raised.c.reading_id == readings.c.id)
_reading_out = (*_READING_COLUMNS, _raised.c.id.label("alert_id"), _raised.c.level.label("alert_raised_level"))

# The device's readings at exactly the batch's times, voided too and in any session (a batch sent
# again), each with the alert it raised. The range as well as the times: one scan of the device's
# index between the batch's first and last time, whatever the statistics say of a busy device.
_SENT = "sent_"
_sent_columns = [column.label(_SENT + column.name) for column in _reading_out]
_sent_at_these_times = sa.and_(readings.c.device_id == devices.c.id, readings.c.measured_at >= sa.bindparam("first"),
                               readings.c.measured_at <= sa.bindparam("last"),
                               readings.c.measured_at.in_(sa.bindparam("times", expanding=True)))

# On PostgreSQL the started session in the device's room is locked first (FOR NO KEY UPDATE: posts to
# one session queue, a change to the session waits for them, inserts elsewhere naming it do not), and
# only then read with its episode and the device's readings: a statement sees what was committed when
# it began, so a read in the locking statement could miss what the post ahead of it has just stored.
_lock_started_session_of_device = (
    sa.select(sessions.c.id).select_from(devices.join(sessions, sa.and_(sessions.c.room_id == devices.c.room_id,
                                                                         sessions.c.status == STARTED)))
    .where(devices.c.token_hash == sa.bindparam("token_hash"), devices.c.revoked_at.is_(None))
    .with_for_update(of=sessions, key_share=True)
)
_device_context = sa.select(*_device_columns, *_context_columns, *_sent_columns).select_from(
    devices.outerjoin(_session_with_room_and_episode, sa.and_(sessions.c.room_id == devices.c.room_id, sessions.c.status == STARTED))
    .outerjoin(_readings_with_alert, _sent_at_these_times)
).where(devices.c.token_hash == sa.bindparam("token_hash"))
_CONTEXT_NAMES = [column.name for column in _context_columns]


def device_context(connection: Connection, token_hash: str, times: list[datetime]) -> tuple[dict | None, list[dict]]:
    """The device with this token hash, the started session in its room (locked on PostgreSQL;
    session_id None when there is none) with the room's name and the session's alert episode; and the
    device's readings stored at exactly these times, each with the alert it raised (alert_id).
    (None, []) when no device has this token. Two statements on PostgreSQL (the lock, then the
    read), one on SQLite, whose write transactions run one at a time."""
    locked = None
    if is_postgresql(connection):
        locked = connection.execute(_lock_started_session_of_device, {"token_hash": token_hash}).scalar()
    rows = connection.execute(_device_context, {"token_hash": token_hash, "first": min(times), "last": max(times), "times": times}).all()
    if not rows:
        return None, []
    width = len(rows[0]) - len(_sent_columns)
    context = dict(zip(rows[0]._fields[:width], rows[0][:width], strict=True))
    if is_postgresql(connection) and context["session_id"] != locked:
        # Started between the two statements, so not locked: as if a moment later (no session yet).
        context.update(dict.fromkeys(_CONTEXT_NAMES))
    names = [column.name for column in _reading_out]
    sent = [dict(zip(names, row[width:], strict=True)) for row in rows if row[width] is not None]
    return context, sent


def session_context(connection: Connection, session_id: str) -> dict | None:
    """A session for a change to its readings or alerts, with its room's name and its alert episode:
    on PostgreSQL locked first as device_context locks it, then read. None when there is no such session."""
    if is_postgresql(connection):
        connection.execute(sa.select(sessions.c.id).where(sessions.c.id == session_id).with_for_update(key_share=True))
    return row_of(connection, sa.select(*_context_columns).select_from(_session_with_room_and_episode).where(sessions.c.id == session_id))


def session_of(connection: Connection, session_id: str) -> dict | None:
    """A session's id, patient and status, for a read (no lock), or None."""
    return row_of(connection, sa.select(sessions.c.id, sessions.c.patient_id, sessions.c.status).where(sessions.c.id == session_id))


# The readings that fill in a batch's partial sets, in one statement of bounded size whatever the
# session's history: for each scored parameter the latest reading (not voided) that has it in the
# scoring window before the batch's first time, and the session's readings among the batch's times.
def _latest_with(parameter: str):
    # Ordered by the index's own column alone, so the scan stops at the first row that has the parameter.
    latest = (sa.select(*_READING_COLUMNS)
              .where(readings.c.session_id == sa.bindparam("session_id"), readings.c.voided_at.is_(None),
                     readings.c[parameter].is_not(None), readings.c.measured_at >= sa.bindparam("earliest"),
                     readings.c.measured_at < sa.bindparam("first"))
              .order_by(readings.c.measured_at.desc()).limit(1).subquery(f"latest_{parameter}"))
    return sa.select(latest)


_among_the_batch = sa.select(*_READING_COLUMNS).where(
    readings.c.session_id == sa.bindparam("session_id"), readings.c.voided_at.is_(None),
    readings.c.measured_at >= sa.bindparam("first"), readings.c.measured_at <= sa.bindparam("last"))
_recent = sa.union_all(*(_latest_with(parameter) for parameter in SCORED), _among_the_batch)


def recent_readings(connection: Connection, session_id: str, first: datetime, last: datetime, window: timedelta) -> list[dict]:
    """What can fill in the partial sets of a batch measured from `first` to `last` (scoring `window`):
    at most one reading per scored parameter before the batch, and the session's readings among its
    times; none voided, each once."""
    rows = connection.execute(_recent, {"session_id": session_id, "earliest": first - window, "first": first, "last": last})
    return list({row["id"]: dict(row) for row in rows.mappings()}.values())


# --- the write of a post --------------------------------------------------------------------------

_AUDITED = [column.name for column in audit_log.c if column.name != "id"]
_EVENT = ("event_id", "event_type", "body", "created_at", "attempts")
_READING_NAMES = [column.name for column in readings.c]

# On PostgreSQL the readings travel as one JSON parameter, whatever their number: the statement's
# text stays the same, so it is compiled once and prepared once (a multi-row VALUES would be a new
# statement for every batch size, compiled at every request).
_posted = sa.func.json_to_recordset(sa.cast(sa.bindparam("readings", type_=sa.Text()), postgresql.JSON())).table_valued(
    *(sa.column(column.name, column.type) for column in readings.c)).render_derived(name="posted", with_types=True)
_insert_posted = readings.insert().from_select(_READING_NAMES, sa.select(*(_posted.c[name] for name in _READING_NAMES)))
_audited = audit_log.insert().values({name: sa.bindparam(f"audit_{name}", type_=audit_log.c[name].type) for name in _AUDITED}) \
    .cte("audited")
_insert_posted_and_audit = _insert_posted.add_cte(_audited)
_audit_alone = audit_log.insert().values({name: sa.bindparam(f"audit_{name}", type_=audit_log.c[name].type) for name in _AUDITED})


def _json_value(value):
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    raise TypeError(f"{type(value).__name__} in a reading")


def _upsert(connection: Connection):
    return postgresql.insert if is_postgresql(connection) else sqlite.insert


def _episode_upsert(insert, row: dict):
    statement = insert(alert_episodes).values(**row)
    return statement.on_conflict_do_update(
        index_elements=[alert_episodes.c.session_id],
        set_={name: statement.excluded[name] for name in row if name != "session_id"},
    )


def write_readings(connection: Connection, new_readings: list[dict], audit_rows: list[dict], episode: dict | None = None,
                   new_alerts: Iterable[dict] = (), events: Iterable[dict] = ()) -> None:
    """Store new readings (every column given) with what comes with them: the request's audit rows
    (UnitOfWork.audit_rows), the session's alert episode when it changed, the alerts raised and their
    outbox rows (UnitOfWork.event_row). On PostgreSQL one statement (the rest rides along as CTEs of
    the readings' INSERT); on SQLite one per kind of row."""
    new_alerts, events = list(new_alerts), list(events)
    if not is_postgresql(connection):
        for table, rows in ((readings, new_readings), (alerts, new_alerts), (outbox, events), (audit_log, audit_rows)):
            if rows:
                connection.execute(table.insert(), rows)
        if episode is not None:
            connection.execute(_episode_upsert(sqlite.insert, episode))
        return
    parameters = {}
    if new_readings:
        parameters["readings"] = json.dumps([{name: row[name] for name in _READING_NAMES} for row in new_readings], default=_json_value)
    if len(audit_rows) == 1:
        parameters.update({f"audit_{name}": audit_rows[0][name] for name in _AUDITED})
    rare = []   # an episode that changed, alerts: not at every post, so their statement may be compiled afresh
    if len(audit_rows) > 1:
        rare.append(audit_log.insert().values([{name: row[name] for name in _AUDITED} for row in audit_rows]).cte("audited_all"))
    if episode is not None:
        rare.append(_episode_upsert(postgresql.insert, episode).cte("episode"))
    if new_alerts:
        rare.append(alerts.insert().values(new_alerts).cte("raised_alerts"))
    if events:
        rare.append(outbox.insert().values([{name: row[name] for name in _EVENT} for row in events]).cte("events"))
    if new_readings:
        statement = _insert_posted_and_audit if len(audit_rows) == 1 else _insert_posted
    elif len(audit_rows) == 1:
        statement = _audit_alone      # nothing new (a batch sent again): the audit row alone
    elif rare:
        statement = sa.select(sa.literal(1))
    else:
        return
    connection.execute(statement.add_cte(*rare) if rare else statement, parameters)


def save_episode(connection: Connection, episode: dict) -> None:
    """Insert or replace a session's alert episode row."""
    connection.execute(_episode_upsert(_upsert(connection), episode))


# --- readings, read and voided -----------------------------------------------------------------


def reading_of_session(connection: Connection, session_id: str, reading_id: str) -> dict | None:
    """One reading of the session (with the alert it raised), or None."""
    return row_of(connection, sa.select(*_reading_out).select_from(_readings_with_alert)
                  .where(readings.c.id == reading_id, readings.c.session_id == session_id))


def readings_of_session(connection: Connection, session_id: str, since: datetime | None, limit: int, offset: int) -> list[dict]:
    """The session's readings measured after `since` (all when None), oldest first, one page; voided ones too."""
    query = sa.select(*_reading_out).select_from(_readings_with_alert).where(readings.c.session_id == session_id)
    if since is not None:
        query = query.where(readings.c.measured_at > since)
    return rows_of(connection, query.order_by(readings.c.measured_at, readings.c.received_at, readings.c.id).limit(limit).offset(offset))


def scored_readings_in_arrival_order(connection: Connection, session_id: str) -> list[dict]:
    """The session's scored readings that are not voided, as they arrived: what its alert episode is made of."""
    return rows_of(connection, sa.select(readings.c.alert_level, readings.c.news2_complete)
                   .where(readings.c.session_id == session_id, readings.c.news2_total.is_not(None), readings.c.voided_at.is_(None))
                   .order_by(readings.c.received_at, readings.c.measured_at, readings.c.id))


def void(connection: Connection, reading_id: str, at: datetime, by: str, reason: str) -> None:
    connection.execute(readings.update().where(readings.c.id == reading_id).values(voided_at=at, voided_by=by, void_reason=reason))


# --- devices -------------------------------------------------------------------------------------

_device_out = (*devices.c, rooms.c.name.label("room_name"))
_devices_with_room = devices.outerjoin(rooms, rooms.c.id == devices.c.room_id)


def room(connection: Connection, room_id: str) -> dict | None:
    """The room's copy (from scheduling.room.changed), or None."""
    return row_of(connection, sa.select(rooms).where(rooms.c.id == room_id))


def device(connection: Connection, device_id: str, lock: bool = False) -> dict | None:
    """A device with its room's name (locked for a change when asked, on PostgreSQL), or None."""
    query = sa.select(*_device_out).select_from(_devices_with_room).where(devices.c.id == device_id)
    if lock and is_postgresql(connection):
        query = query.with_for_update(of=devices)
    return row_of(connection, query)


def listed_devices(connection: Connection, room_id: str | None = None, active: bool | None = None) -> list[dict]:
    """Devices by room name then device name, optionally of one room, active (not revoked) or not."""
    query = sa.select(*_device_out).select_from(_devices_with_room).order_by(rooms.c.name, devices.c.name, devices.c.id)
    if room_id is not None:
        query = query.where(devices.c.room_id == room_id)
    if active is not None:
        query = query.where(devices.c.revoked_at.is_(None) if active else devices.c.revoked_at.is_not(None))
    return rows_of(connection, query)


def insert_device(connection: Connection, row: dict) -> None:
    connection.execute(devices.insert().values(**row))


def update_device(connection: Connection, device_id: str, **values) -> None:
    connection.execute(devices.update().where(devices.c.id == device_id).values(**values, version=devices.c.version + 1))


def started_session_in(connection: Connection, room_id: str) -> dict | None:
    """The started session in a room (id and patient), or None."""
    return row_of(connection, sa.select(sessions.c.id, sessions.c.patient_id).where(sessions.c.room_id == room_id,
                                                                                     sessions.c.status == STARTED))


# --- alerts ----------------------------------------------------------------------------------------

_alert_out = (*alerts.c, sessions.c.patient_id)
_alerts_with_session = alerts.join(sessions, sessions.c.id == alerts.c.session_id)


def alert(connection: Connection, alert_id: str, lock: bool = False) -> dict | None:
    """An alert with its session's patient (the alert row locked for a change when asked, on PostgreSQL), or None."""
    query = sa.select(*_alert_out).select_from(_alerts_with_session).where(alerts.c.id == alert_id)
    if lock and is_postgresql(connection):
        query = query.with_for_update(of=alerts)
    return row_of(connection, query)


def listed_alerts(connection: Connection, acknowledged: bool | None = None, session_id: str | None = None, room_id: str | None = None,
                  kind: str | None = None, level: str | None = None, since: datetime | None = None, limit: int = 100,
                  offset: int = 0) -> list[dict]:
    """Alerts, oldest first, filtered; `acknowledged` False gives the open ones."""
    query = sa.select(*_alert_out).select_from(_alerts_with_session)
    if acknowledged is not None:
        query = query.where(alerts.c.acknowledged_at.is_not(None) if acknowledged else alerts.c.acknowledged_at.is_(None))
    for column, value in (("session_id", session_id), ("room_id", room_id), ("kind", kind), ("level", level)):
        if value is not None:
            query = query.where(alerts.c[column] == value)
    if since is not None:
        query = query.where(alerts.c.raised_at >= since)
    return rows_of(connection, query.order_by(alerts.c.raised_at, alerts.c.id).limit(limit).offset(offset))


def acknowledge(connection: Connection, alert_row: dict, at: datetime, by: str) -> None:
    """Acknowledge an alert together with the alert it escalates or the escalation of it: one
    problem, acknowledged once."""
    original = alert_row["escalation_of"] or alert_row["id"]
    connection.execute(alerts.update()
                       .where(sa.or_(alerts.c.id == original, alerts.c.escalation_of == original), alerts.c.acknowledged_at.is_(None))
                       .values(acknowledged_at=at, acknowledged_by=by))


def insert_alerts_once(connection: Connection, rows: list[dict], key: str) -> list[dict]:
    """Insert alerts unless one with the same `key` (silent_since per session, or escalation_of)
    exists already, whoever inserted it, even at this moment: the rows written, as given."""
    if not rows:
        return []
    index = [alerts.c.session_id, alerts.c.silent_since] if key == "silent_since" else [alerts.c.escalation_of]
    statement = _upsert(connection)(alerts).values(rows).on_conflict_do_nothing(index_elements=index).returning(alerts.c.id)
    written = set(connection.execute(statement).scalars())
    return [row for row in rows if row["id"] in written]


_last_received = sa.select(sa.func.max(readings.c.received_at)).where(readings.c.session_id == sessions.c.id) \
    .correlate(sessions).scalar_subquery()


def monitored_started_sessions(connection: Connection) -> list[dict]:
    """Every started session in a room with an active device: its room, since when it was started,
    when a device last came to the room, and when its last reading arrived (None: never)."""
    query = (
        sa.select(sessions.c.id.label("session_id"), sessions.c.room_id, sessions.c.started_at,
                  sa.func.coalesce(rooms.c.name, sessions.c.room_name).label("room_name"),
                  sa.func.max(devices.c.assigned_at).label("device_since"), _last_received.label("last_received_at"))
        .select_from(sessions.join(devices, sa.and_(devices.c.room_id == sessions.c.room_id, devices.c.revoked_at.is_(None)))
                     .outerjoin(rooms, rooms.c.id == sessions.c.room_id))
        .where(sessions.c.status == STARTED)
        .group_by(sessions.c.id, sessions.c.room_id, sessions.c.started_at, rooms.c.name, sessions.c.room_name)
    )
    return rows_of(connection, query)


def still_in(connection: Connection, session_ids: Iterable[str], statuses: tuple[str, ...]) -> set[str]:
    """Which of these sessions are in one of `statuses` now: locked on PostgreSQL, so a discharge or an
    abort committing meanwhile is waited for and then seen (the worker's look at them was a plain read)."""
    session_ids = sorted(set(session_ids))
    if not session_ids:
        return set()
    query = sa.select(sessions.c.id).where(sessions.c.id.in_(session_ids), sessions.c.status.in_(statuses))
    if is_postgresql(connection):
        query = query.with_for_update(key_share=True)
    return set(connection.execute(query).scalars())


def unacknowledged_originals(connection: Connection, raised_before: datetime, session_statuses: tuple[str, ...]) -> list[dict]:
    """Alerts nobody acknowledged, raised before the moment, not escalations and not escalated yet, in
    open sessions: locked on PostgreSQL, so an acknowledgement arriving meanwhile waits, or wins and
    removes the alert from this answer."""
    escalated = sa.exists().where(_raised.c.escalation_of == alerts.c.id)
    query = (sa.select(alerts).select_from(_alerts_with_session)
             .where(alerts.c.acknowledged_at.is_(None), alerts.c.escalation.is_(False), alerts.c.raised_at <= raised_before, ~escalated,
                    sessions.c.status.in_(session_statuses))
             .order_by(alerts.c.raised_at, alerts.c.id))
    if is_postgresql(connection):
        query = query.with_for_update(of=alerts)
    return rows_of(connection, query)


# --- what the session lifecycle reads (the board, discharge): one query each ------------------


def latest_scores(connection: Connection, session_ids: Iterable[str]) -> dict[str, dict]:
    """Each session's newest scored reading that is not voided: {session_id: {"reading_id",
    "measured_at", "total", "points", "level"}} (level as the score reached when it arrived). Sessions
    without one are left out."""
    session_ids = list(session_ids)
    if not session_ids:
        return {}
    newest = sa.func.row_number().over(partition_by=readings.c.session_id,
                                       order_by=(readings.c.measured_at.desc(), readings.c.received_at.desc(), readings.c.id.desc()))
    ranked = (sa.select(readings.c.session_id, readings.c.id, readings.c.measured_at, readings.c.news2_total, readings.c.news2_points,
                        readings.c.alert_level, newest.label("rank"))
              .where(readings.c.session_id.in_(session_ids), readings.c.news2_total.is_not(None), readings.c.voided_at.is_(None))
              .subquery("ranked"))
    found = rows_of(connection, sa.select(ranked).where(ranked.c.rank == 1))
    return {row["session_id"]: {"reading_id": row["id"], "measured_at": row["measured_at"], "total": row["news2_total"],
                                "points": row["news2_points"], "level": row["alert_level"]} for row in found}


def open_alerts(connection: Connection, session_ids: Iterable[str]) -> dict[str, list[dict]]:
    """Each session's alerts nobody acknowledged, oldest first: {session_id: [alert row]}; sessions without any left out."""
    session_ids = list(session_ids)
    if not session_ids:
        return {}
    found: dict[str, list[dict]] = {}
    for row in rows_of(connection, sa.select(alerts).where(alerts.c.session_id.in_(session_ids), alerts.c.acknowledged_at.is_(None))
                       .order_by(alerts.c.raised_at, alerts.c.id)):
        found.setdefault(row["session_id"], []).append(row)
    return found


def alert_summaries(connection: Connection, session_id: str) -> list[dict]:
    """Every alert of the session, oldest first, as sessions.session.completed summarises them
    (clinic.events.AlertSummary); observed_at is when it was raised for a silent monitor."""
    query = sa.select(alerts.c.kind, alerts.c.level, alerts.c.news2_score, alerts.c.observed_at, alerts.c.raised_at,
                      alerts.c.escalation).where(alerts.c.session_id == session_id).order_by(alerts.c.raised_at, alerts.c.id)
    return [{"kind": row["kind"], "level": row["level"], "news2_score": row["news2_score"],
             "observed_at": row["observed_at"] or row["raised_at"], "escalation": row["escalation"]}
            for row in rows_of(connection, query)]


def highest_news2(connection: Connection, session_id: str) -> int | None:
    """The session's highest NEWS2 total among readings not voided; None without a scored one."""
    return connection.execute(sa.select(sa.func.max(readings.c.news2_total))
                              .where(readings.c.session_id == session_id, readings.c.voided_at.is_(None))).scalar()


def monitored_rooms(connection: Connection, room_ids: Iterable[str]) -> set[str]:
    """Those of the rooms that have an active (not revoked) device."""
    room_ids = list(room_ids)
    if not room_ids:
        return set()
    return set(connection.execute(sa.select(devices.c.room_id).distinct()
                                  .where(devices.c.room_id.in_(room_ids), devices.c.revoked_at.is_(None))).scalars())
