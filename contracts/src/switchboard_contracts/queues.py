"""Call queues (SPEC section 2)."""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated

from pydantic import Field, StringConstraints, model_validator

from .common import InternalNumber, Model, SoundFileId, StoredEntity, Target


class QueueStrategy(StrEnum):
    RINGALL = "ringall"
    LEASTRECENT = "leastrecent"
    FEWESTCALLS = "fewestcalls"
    RANDOM = "random"
    RRMEMORY = "rrmemory"
    LINEAR = "linear"


class WaitingSound(StrEnum):
    RINGBACK = "ringback"
    MUSIC_ON_HOLD = "music_on_hold"


#: Without scenario 1 a queue call ends after this many seconds (SPEC section 2).
DEFAULT_QUEUE_CALL_LIMIT = 300


class CallQueueFields(Model):
    name: Annotated[str, StringConstraints(min_length=1, max_length=100)]
    number: InternalNumber
    note: Annotated[str, StringConstraints(max_length=1000)] = ""
    agents: list[InternalNumber] = Field(
        default_factory=list, max_length=200, description="Employee numbers, in order."
    )
    strategy: QueueStrategy = QueueStrategy.RINGALL
    caller_id_prefix: Annotated[str, StringConstraints(max_length=20)] = Field(
        default="", description="Short name shown before the caller ID, e.g. 'consult:'."
    )
    agent_ring_time: int = Field(default=15, ge=1, le=300)
    wrapup_time: int = Field(default=15, ge=0, le=300)
    ring_agents_on_call: bool = False
    waiting_sound: WaitingSound = WaitingSound.RINGBACK
    music_on_hold_sound_id: SoundFileId | None = None
    announce_position: bool = False
    announce_estimated_wait: bool = False
    all_busy_sound_id: SoundFileId | None = Field(
        default=None, description="Played only when all agents are busy."
    )
    announce_period: int = Field(default=30, ge=10, le=600)
    max_wait_time: int | None = Field(
        default=None, ge=1, le=86400, description="Scenario 1: seconds before max_wait_target."
    )
    max_wait_target: Target | None = None
    no_agents_target: Target | None = Field(
        default=None, description="Scenario 2: where calls go when no agent is registered."
    )

    @model_validator(mode="after")
    def _scenario_one_complete(self) -> CallQueueFields:
        if (self.max_wait_time is None) != (self.max_wait_target is None):
            raise ValueError("max_wait_time and max_wait_target are set together (scenario 1)")
        if len(set(self.agents)) != len(self.agents):
            raise ValueError("agents lists an employee twice")
        return self


class CallQueue(CallQueueFields, StoredEntity):
    """A stored CallQueue: its fields plus id, tenant, revision and timestamps."""
