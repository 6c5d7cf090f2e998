"""Schedules: made, listed, changed and deleted through the API (their env stored
encrypted, like a run's), and fired by runnerd.firing — a fire is one write that
makes the slot's run and moves the schedule on, under the runs' UNIQUE
(schedule_id, scheduled_for), so no slot is fired twice."""

from __future__ import annotations

from .base import Aggregate


class Schedules(Aggregate):
    # -- through the API ----------------------------------------------------------

    # -- firing -------------------------------------------------------------------
    pass
