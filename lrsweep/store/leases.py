"""Leases: a RUNNING trial belongs to whoever keeps its heartbeat fresh. Heartbeats are
Optuna's own table, read and written here with the database server's clock; a takeover is a
compare-and-set on a heartbeat, so of several workers looking at once exactly one wins."""

from __future__ import annotations

import datetime
import json
import math
import os
from typing import Any

import optuna
import sqlalchemy

from lrsweep.store import optuna_private
from lrsweep.store.storage import StorageError

# How often a running trial says it is alive, and the silence after which another process
# takes it over (tests shorten both; SQLite's clock ticks in whole seconds, so keep grace ≥ 2).
# Read when imported, so that any command starts; `check_lease_settings` refuses a bad value
# before a study is run.
_LEASE_SETTINGS = {"LRSWEEP_HEARTBEAT_SECONDS": 10.0, "LRSWEEP_GRACE_SECONDS": 30.0}


def _seconds(name: str) -> float | None:
    """The environment's value for a lease setting, its default when unset; None when it is
    not a number of seconds above 0."""
    raw = os.environ.get(name, "").strip()
    try:
        value = float(raw) if raw else _LEASE_SETTINGS[name]
    except ValueError:
        return None
    return value if math.isfinite(value) and value > 0 else None


HEARTBEAT_SECONDS = _seconds("LRSWEEP_HEARTBEAT_SECONDS") or 10.0
GRACE_SECONDS = _seconds("LRSWEEP_GRACE_SECONDS") or 30.0


def check_lease_settings() -> None:
    """Refuse, before anything is written, a heartbeat or grace period that is no number of
    seconds above 0, or a heartbeat no shorter than the grace: its worker would be taken for
    dead between two of its own heartbeats."""
    for name in _LEASE_SETTINGS:
        if _seconds(name) is None:
            raise StorageError(f"{name}={os.environ[name]!r}: give a number of seconds above 0")
    heartbeat, grace = (_seconds(name) for name in _LEASE_SETTINGS)
    if heartbeat >= grace:
        raise StorageError(f"LRSWEEP_HEARTBEAT_SECONDS={heartbeat:g} must be shorter than "
                           f"LRSWEEP_GRACE_SECONDS={grace:g}: a worker would be taken for "
                           "dead between its own heartbeats")


_LONG_AGO = datetime.datetime(2000, 1, 1)


def record_heartbeats(study: optuna.Study, trial_ids: list[int]) -> None:
    """Renew the trials' leases: their heartbeats set to the database's clock, in one
    transaction (Optuna's record_heartbeat takes one per trial: 100 for a GPU-sized pack)."""
    rdb, models = optuna_private.require_tables(study, "a lease (heartbeat)")
    beats = models.TrialHeartbeatModel.__table__
    now = sqlalchemy.func.now()
    for attempt in range(2):
        try:
            with rdb.engine.begin() as conn:
                have = set(conn.execute(sqlalchemy.select(beats.c.trial_id).where(
                    beats.c.trial_id.in_(trial_ids))).scalars())
                if have:
                    conn.execute(sqlalchemy.update(beats).where(
                        beats.c.trial_id.in_(list(have))).values(heartbeat=now))
                missing = [i for i in trial_ids if i not in have]
                if missing:
                    conn.execute(sqlalchemy.insert(beats).values(
                        [{"trial_id": i, "heartbeat": now} for i in missing]))
            return
        except sqlalchemy.exc.IntegrityError:
            # Another worker gave one of them a first beat meanwhile (`claim_stale_trials`
            # does, for trials it finds without one): it is there now, look again.
            if attempt:
                raise


def claim_stale_trials(study: optuna.Study, pack_attr: str | None = None, *,
                       one_pack: bool = False) -> list[int]:
    """Take over the RUNNING trials whose heartbeat is older than the grace period (their
    process died). Each claim is a compare-and-set on a heartbeat, so when several workers
    look at once, exactly one wins. With `pack_attr` (a trial system attribute: a list whose
    first item names the pack the trial trains in) a pack is claimed whole: the
    compare-and-set is made on its first RUNNING member, and the winner takes the others with
    it, so two workers never split one pack (and its one checkpoint). Returns the trial ids
    now ours. With `one_pack`, at most one pack (a dead worker's: a worker trains one at a
    time) and the trials asked in no pack yet: the packs of other dead workers are left to
    other workers, which would otherwise wait while this one trains them one after another.

    Times are the database server's alone: a trial with no heartbeat yet (its process died
    between asking and its first beat) gets one now, and is stale a grace period later."""
    rdb, models = optuna_private.require_tables(study, "taking over a dead worker's trials")
    beats = models.TrialHeartbeatModel.__table__
    attrs = models.TrialSystemAttributeModel.__table__
    grace = datetime.timedelta(seconds=GRACE_SECONDS)
    with rdb.engine.begin() as conn:
        now, running = _running_heartbeats(conn, study, models)
        packs = {} if pack_attr is None or not running else {
            trial_id: json.loads(value) for trial_id, value in conn.execute(
                sqlalchemy.select(attrs.c.trial_id, attrs.c.value_json).where(
                    attrs.c.key == pack_attr, attrs.c.trial_id.in_(list(running))))}
    for trial_id, beat in running.items():
        if beat is None:
            try:
                with rdb.engine.begin() as conn:
                    conn.execute(sqlalchemy.insert(beats).values(
                        trial_id=trial_id, heartbeat=sqlalchemy.func.now()))
            except sqlalchemy.exc.IntegrityError:
                pass  # its owner (or another worker) gave it one an instant ago
    stale = _silent(now, running)
    claimed: list[int] = []
    seen: set[int] = set()
    for trial_id in sorted(stale):
        if trial_id in seen:
            continue
        pack = packs.get(trial_id, [trial_id])[0]
        members = sorted(i for i in running if packs.get(i, [i])[0] == pack)
        seen.update(members)
        leader = members[0]
        if leader not in stale:
            continue  # its pack is alive: another worker's, or one just taken over
        if one_pack and leader in packs and any(i in packs for i in claimed):
            continue  # another dead worker's pack: for the next worker that looks
        with rdb.engine.begin() as conn:
            # Still stale at the moment of writing: of several claimants, the first one's
            # fresh heartbeat makes every other one's condition false.
            won = conn.execute(sqlalchemy.update(beats).where(
                beats.c.trial_id == leader, beats.c.heartbeat < now - grace).values(
                heartbeat=sqlalchemy.func.now())).rowcount == 1
            if won and len(members) > 1:
                conn.execute(sqlalchemy.update(beats).where(
                    beats.c.trial_id.in_(members[1:])).values(heartbeat=sqlalchemy.func.now()))
        if won:
            claimed += members
    return claimed


def _running_heartbeats(conn: Any, study: optuna.Study, models: Any
                        ) -> tuple[datetime.datetime, dict[int, datetime.datetime | None]]:
    """The database server's time, and each RUNNING trial's id with its last heartbeat (None
    before its first)."""
    beats = models.TrialHeartbeatModel.__table__
    trials = models.TrialModel.__table__
    now = conn.execute(sqlalchemy.select(sqlalchemy.func.now())).scalar().replace(tzinfo=None)
    running = dict(conn.execute(
        sqlalchemy.select(trials.c.trial_id, beats.c.heartbeat)
        .select_from(trials.outerjoin(beats, beats.c.trial_id == trials.c.trial_id))
        .where(trials.c.study_id == optuna_private.study_id(study),
               trials.c.state == optuna.trial.TrialState.RUNNING)).all())
    return now, running


def state_names(study: optuna.Study, trials: list[optuna.trial.FrozenTrial]) -> list[str]:
    """Each trial's state as every table and message names it: Optuna's, lower case, but a
    RUNNING trial no worker holds (handed back by Ctrl-C, or its worker dead past the grace
    period) is `interrupted`: it waits for `lrsweep resume`."""
    running = any(t.state == optuna.trial.TrialState.RUNNING for t in trials)
    unheld = unheld_trials(study) if running else set()
    return ["interrupted" if t.state == optuna.trial.TrialState.RUNNING
            and optuna_private.trial_id(t) in unheld else t.state.name.lower() for t in trials]


def unheld_trials(study: optuna.Study) -> set[int]:
    """The ids of the study's RUNNING trials that no worker holds: their lease handed back
    (Ctrl-C) or their heartbeat silent past the grace period (a worker that died). `resume`
    continues them and a worker takes them over. Empty for a store without Optuna's tables
    (every RUNNING trial is then taken as held)."""
    found = optuna_private.tables(study)
    if found is None:
        return set()
    rdb, models = found
    with rdb.engine.connect() as conn:
        return _silent(*_running_heartbeats(conn, study, models))


def _silent(now: datetime.datetime, running: dict[int, datetime.datetime | None]) -> set[int]:
    """The trials among `running` whose last heartbeat is older than the grace period, by the
    database's clock `now` (one with no heartbeat yet is not: its first is due)."""
    grace = datetime.timedelta(seconds=GRACE_SECONDS)
    return {i for i, beat in running.items()
            if beat is not None and now - beat.replace(tzinfo=None) > grace}


def release_trials(study: optuna.Study, trial_ids: list[int]) -> None:
    """Give up our leases at once (Ctrl-C), so the next run continues these trials without
    waiting out the grace period."""
    rdb, models = optuna_private.require_tables(study, "handing leases back")
    beats = models.TrialHeartbeatModel.__table__
    with rdb.engine.begin() as conn:
        conn.execute(sqlalchemy.update(beats).where(beats.c.trial_id.in_(trial_ids))
                     .values(heartbeat=_LONG_AGO))
