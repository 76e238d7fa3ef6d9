"""All configuration in one typed object.

Sources, later wins: defaults below < a YAML file (``--config`` or ``IVR_CONFIG_FILE``) <
``IVR_*`` environment variables. Nested fields use ``__``: ``IVR_AUDIO__ENDPOINT_SILENCE_MS=500``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import yaml
from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

# Each component's configuration lives beside it; Settings nests them.
from audio.caller import AudioConfig
from flows.backends import BackendConfig
from ivr.admission import AdmissionConfig
from ivr.agents import DeskConfig
from ivr.call_limits import CallLimitsConfig
from ivr.callbacks import CallbackConfig
from ivr.escalation import EscalationConfig
from ivr.event_loop import EventLoopKind
from ivr.nodes import ClusterConfig, default_node_id
from ivr.privacy import PrivacyConfig
from ivr.queue_hours import QueueHoursConfig
from ivr.report import CostConfig
from ivr.storage_queue import StorageConfig
from ivr.turn_end import TurnEndConfig
from models.asr import AsrConfig
from models.intent import Industry, answer_threshold
from models.tts import TtsConfig

__all__ = [
    "AdmissionConfig",
    "AsrConfig",
    "AudioConfig",
    "BackendConfig",
    "CallLimitsConfig",
    "CallbackConfig",
    "CostConfig",
    "DeskConfig",
    "EscalationConfig",
    "Industry",
    "PrivacyConfig",
    "QueueHoursConfig",
    "Settings",
    "StorageConfig",
    "TtsConfig",
    "TurnEndConfig",
]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVR_", env_nested_delimiter="__", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = Field(
        "",
        description="how Twilio reaches us; the stream URL uses its host. Default: http://localhost:<port>",
    )
    twilio_auth_token: str | None = Field(None, description="validates X-Twilio-Signature; required unless insecure")
    twilio_account_sid: str = "ACtest"
    twilio_api_base_url: str | None = Field(None, description="override for Twilio's REST API (tests: a local server)")
    twilio_from_number: str = "+15550000000"
    api_token: str | None = Field(None, description="bearer token for /api and the agent desk")
    insecure_dev: bool = False
    data_dir: Path = Path("./data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under data_dir")
    intent_cache_dir: Path | None = Field(
        None, description="phrase embeddings kept between starts (default data_dir/intent-cache); nodes may share it"
    )
    region: str = "us_west"
    industry: Industry = "general"
    flow: str = "ecommerce_delivery"
    drain_deadline_s: float = Field(30.0, description="how long live calls may continue after SIGTERM")
    event_loop: EventLoopKind = Field(
        "uvloop", description="the server's event loop: uvloop (less CPU per frame) or asyncio (ivr/event_loop.py)"
    )
    max_message_bytes: int = Field(64 * 1024, description="larger WebSocket messages are refused")
    audio: AudioConfig = AudioConfig()
    asr: AsrConfig = AsrConfig()
    tts: TtsConfig = TtsConfig()
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    escalation: EscalationConfig = EscalationConfig()
    costs: CostConfig = CostConfig()
    storage: StorageConfig = StorageConfig()
    calls: CallLimitsConfig = CallLimitsConfig()
    callbacks: CallbackConfig = CallbackConfig()
    desk: DeskConfig = DeskConfig()
    privacy: PrivacyConfig = PrivacyConfig()
    queue_hours: QueueHoursConfig = QueueHoursConfig()  # each queue's hours, hold announcements, overflow
    node_id: str = Field(default_factory=default_node_id, description="this node's name in a fleet (IVR_NODE_ID)")
    redis_url: str | None = Field(None, description="live state shared by a fleet (IVR_REDIS_URL); none: one node")
    cluster: ClusterConfig = ClusterConfig()
    turn_end: TurnEndConfig = TurnEndConfig()
    admission: AdmissionConfig = AdmissionConfig()

    @model_validator(mode="after")
    def _default_public_url(self) -> Settings:
        if not self.public_url:
            # The port we listen on, not a fixed 8080. Written past __setattr__ so it does not count as set:
            # `load` merges only what a source gave, and a --port given later must still move it.
            self.__dict__["public_url"] = f"http://localhost:{self.port}"
        return self

    @property
    def answer_threshold(self) -> float:
        """Intent confidence needed to act without clarifying (`models.intent.answer_threshold`)."""
        return answer_threshold(self.industry)

    def resolved_database_url(self) -> str:
        if self.database_url:
            return self.database_url
        return f"sqlite:///{Path(self.data_dir).resolve() / 'ivr.sqlite3'}"

    @classmethod
    def load(cls, path: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
        """Read the YAML file (if any), then let IVR_* variables and explicit overrides win."""
        path = path or os.environ.get("IVR_CONFIG_FILE")
        file_values: dict[str, Any] = {}
        if path:
            with open(path, encoding="utf-8") as fh:
                file_values = yaml.safe_load(fh) or {}
            if not isinstance(file_values, dict):
                raise ValueError(f"{path}: configuration must be a mapping")
        env_values = cls().model_dump(exclude_unset=True)
        merged = _deep_merge(_deep_merge(file_values, env_values), overrides)
        return cls.model_validate(merged)


def _deep_merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out
