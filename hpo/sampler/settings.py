"""Options of the LLM-informed sampler (``sampler: {type: llm-tpe, ...}`` in a study file).

Plain pydantic models with no dependency on the rest of ``hpo``; :class:`hpo.config.SamplerConfig`
inherits :class:`LLMTPEOptions`, so every key below is validated with the study file and a bad
value is a :class:`hpo.errors.ConfigError` naming the file, the key and what is allowed::

    sampler:
      type: llm-tpe
      every_n_trials: 5          # one analysis per 5 finished trials
      patience: 8                # also when the best has not improved for 8 trials
      max_proposal_share: 0.33   # at most a third of the trials come from proposals
      analyst: llm               # rules | llm | auto (llm when an endpoint is configured)
      keep_waiting_proposals: false  # a run's unrun proposals are dropped when it ends
      wait_for_analysis_s: 120   # at the end of a run, wait this long for a running analysis
      llm:
        base_url: http://127.0.0.1:8080/v1
        model: gpt-4o-mini
        api_key_env: OPENAI_API_KEY   # the NAME of the variable, never the key

    >>> LLMTPEOptions(every_n_trials=5).resolved_analyst()
    'rules'
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

_ENV_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")


class LLMConfig(BaseModel):
    """An OpenAI-compatible chat endpoint; the key is read from the environment variable named."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. https://api.openai.com/v1 or http://127.0.0.1:8080/v1")
    model: str = Field(min_length=1)
    api_key_env: str | None = Field(None, description="NAME of the environment variable")
    timeout: float = Field(60.0, gt=0, description="seconds per request")
    max_retries: int = Field(3, ge=0, le=10, description="retries on 429/5xx/timeouts")
    backoff: float = Field(1.0, ge=0, description="first retry delay in seconds, doubled each time")
    max_calls: int = Field(50, ge=0, description="requests per study (all workers, all runs)")
    max_tokens: int = Field(200_000, ge=0, description="prompt + reply tokens per study")
    reply_max_tokens: int = Field(1500, ge=16, description="max_tokens of one reply")
    reply_text_chars: int = Field(400, ge=20, le=2000,
                                  description="longest text field the reply schema allows")
    temperature: float = Field(0.2, ge=0, le=2)
    response_format: Literal["auto", "json_schema", "json_object", "none"] = Field(
        "auto", description="auto: json_schema (hosted APIs), then json_object (llama.cpp)")
    price_per_1k_prompt: float | None = Field(None, ge=0)
    price_per_1k_completion: float | None = Field(None, ge=0)

    @field_validator("base_url")
    @classmethod
    def _http(cls, v: str) -> str:
        if not v.startswith(("http://", "https://")):
            raise ValueError(f"an http(s) URL, got {v!r}")
        return v.rstrip("/")

    @field_validator("api_key_env")
    @classmethod
    def _env_name(cls, v: str | None) -> str | None:
        if v is not None and (not _ENV_NAME.match(v) or v.startswith("sk-")):
            raise ValueError("the NAME of an environment variable (e.g. OPENAI_API_KEY), "
                             "never the key itself")
        return v


class LLMTPEOptions(BaseModel):
    """When analyses run, how many proposals they may add, and which analyst writes them."""

    model_config = ConfigDict(extra="forbid")

    every_n_trials: int = Field(5, ge=1, description="an analysis every N finished trials")
    patience: int | None = Field(None, ge=1, description="also when the best is stale N trials")
    warm_start_from: list[str] = Field(
        default_factory=list,
        description="earlier studies: 'NAME' (same storage) or 'STORAGE_URL#NAME'")
    max_proposal_share: float = Field(1 / 3, ge=0, le=1, description="cap on proposal trials")
    max_proposals: int = Field(3, ge=1, le=20, description="proposals per analysis")
    analyst: Literal["auto", "rules", "llm"] = "auto"
    llm: LLMConfig | None = None
    background: bool = Field(True, description="analyse in a thread beside the trials")
    keep_waiting_proposals: bool = Field(
        False, description="when a run ends, keep the proposals it enqueued but did not run "
        "(WAITING: the next run starts with them); false: they are finished unrun")
    wait_for_analysis_s: float = Field(
        120.0, ge=0, description="when a run ends, seconds to wait for an analysis still "
        "running (its LLM call) before abandoning it; 0: do not wait")

    @model_validator(mode="after")
    def _llm_needs_endpoint(self) -> LLMTPEOptions:
        if self.analyst == "llm" and self.llm is None:
            raise ValueError("analyst: llm needs an llm: {base_url, model, api_key_env} section")
        return self

    def resolved_analyst(self) -> str:
        """``rules`` or ``llm`` (``auto`` means llm when an endpoint is configured)."""
        if self.analyst == "auto":
            return "llm" if self.llm is not None else "rules"
        return self.analyst
