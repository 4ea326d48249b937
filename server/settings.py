"""Every deployment knob, read from ``FACEFOUNDRY_*`` environment variables and CLI flags.

The README's settings table is generated from the same names; a flag of ``facefoundry serve``
overrides the environment (pydantic-settings gives init arguments priority).
"""
from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Literal

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from pipelines.registry import PIPELINES

CommaList = Annotated[list[str], NoDecode]


def _split_commas(value):
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="FACEFOUNDRY_", extra="ignore")

    host: str = Field("127.0.0.1", description="Address to listen on.")
    port: int = Field(8000, description="Port to listen on.")
    public_base_url: str | None = Field(
        None,
        validation_alias=AliasChoices("FACEFOUNDRY_PUBLIC_BASE_URL", "PUBLIC_BASE_URL", "public_base_url"),
        description="Externally visible base URL (https://faces.example.com) for the absolute v2 "
        "status/response URLs and output links; when unset they are built from the request's "
        "(forwarded) host.",
    )

    no_auth: bool = Field(
        False, description="Serve without API keys (`serve --no-auth`); auth is on unless this is set explicitly."
    )
    keys_file: Path = Field(Path("data/keys.json"), description="Hashed API keys, credits and limits.")
    default_cost: float = Field(1.0, ge=0, description="Credits charged per successful call.")
    costs: dict[str, float] = Field({}, description='Per-endpoint credits, JSON: {"sadtalker": 5}.')
    unmetered_credits: float = Field(
        1_000_000.0,
        description="X-remaining-credits sent when auth is off or a key has unlimited credits "
        "(segmindapi crashes without the header, segmind-api.md §2.3).",
    )

    # Same variable as scripts/download_weights.py reads, so both agree on the install root.
    weights_root: Path = Field(
        Path("weights"),
        validation_alias=AliasChoices("FACEFOUNDRY_WEIGHTS_DIR", "weights_root"),
        description="Root of the installed weights (env FACEFOUNDRY_WEIGHTS_DIR).",
    )
    weights: Literal["full", "tiny"] = Field(
        "full", description="Weights profile; `tiny` loads <weights_root>/tiny (random demo weights)."
    )
    device: CommaList = Field(["cpu"], description="Devices, comma separated (cuda:0,cuda:1); one worker each.")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto", description="Model dtype on CUDA; auto: float16 for the pipelines whose parity allows it, "
        "float32 for the others (CPU always computes in float32)."
    )
    allow_noncommercial: bool = Field(False, description="Allow components whose licence is non-commercial.")
    background_remover: Literal["rmbg-1.4", "isnet-general-use"] = Field(
        "rmbg-1.4", description="face-to-sticker background remover: rmbg-1.4 (BRIA, non-commercial) or "
        "isnet-general-use (IS-Net, Apache-2.0)."
    )
    pipelines: CommaList = Field(list(PIPELINES), description="Enabled endpoints, comma separated.")
    lazy: bool = Field(False, description="Load each pipeline on its first request instead of at start.")
    idle_unload_s: float | None = Field(
        None, gt=0, description="Unload a pipeline unused for this many seconds (frees its GPU memory); never when unset."
    )

    queue_max: int = Field(32, ge=1, description="Most jobs waiting per endpoint (v1 and v2); more → 429.")
    request_timeout_s: float = Field(300.0, gt=0, description="Per-request deadline; v1 answers 504 after it.")
    shutdown_grace_s: float = Field(
        30.0, ge=0, description="On SIGTERM: how long running jobs and waiting v1 requests may take to finish."
    )
    log_format: Literal["text", "json"] = Field("text", description="Server log lines: text or one JSON object each.")
    webhook_secret: str | None = Field(
        None, description="HMAC-SHA256 key that signs v2 webhook calls; webhooks are refused while unset."
    )
    webhook_max_attempts: int = Field(5, ge=1, description="Calls per webhook before giving up (1 s, 2 s, 4 s… apart).")
    webhook_timeout_s: float = Field(10.0, gt=0, description="Time limit of one webhook call.")
    job_store: Path = Field(Path("data/jobs.sqlite"), description="SQLite file of the v2 jobs.")
    outputs_dir: Path = Field(
        Path("data/outputs"),
        description="Where v2 results are kept; with --engine ray a directory every node mounts (NFS), "
        "so that any replica serves any result.",
    )
    # Scale-out (issue 14, README "Scale-out").
    store: str | None = Field(
        None, description="redis://host:6379/0: v2 jobs with their inputs, keys, credits and rate limits in Redis, "
        "shared by every replica (needed by --engine ray); unset: the SQLite job store and the keys file.",
    )
    engine: Literal["embedded", "ray"] = Field(
        "embedded", description="embedded: one process, a worker thread per endpoint and device; ray: Ray Serve "
        "replicas (an ingress and one deployment per endpoint) across GPUs and hosts.",
    )
    ray_address: str | None = Field(
        None, description="Ray cluster to join (auto, or ray://head:10001); unset: start a local one."
    )
    ray_ingress_replicas: int = Field(2, ge=1, description="Replicas of the HTTP ingress (stateless, no GPU).")
    ray_num_gpus: float | None = Field(
        None, ge=0, description="GPUs per pipeline replica; fractional shares a GPU (0.5); unset: 1 when --device "
        "is CUDA, else 0.",
    )
    ray_num_cpus: float = Field(1.0, ge=0, description="CPUs reserved per pipeline replica.")
    ray_min_replicas: int = Field(1, ge=0, description="Fewest replicas per endpoint (autoscaling lower bound).")
    ray_max_replicas: int = Field(1, ge=1, description="Most replicas per endpoint (autoscaling upper bound).")
    ray_max_ongoing_requests: int = Field(
        2, ge=1, description="Requests one pipeline replica holds at once (one runs, the rest wait there)."
    )
    job_lease_s: float = Field(
        10.0, gt=0, description="With Redis: how long a job's dispatcher or runner may stay silent before "
        "another replica takes the job over (re-run up to job_max_attempts).",
    )
    store_outputs: bool = Field(True, description="Serve v2 results at /outputs/…; when off, data URIs.")
    job_ttl_s: float = Field(3600.0, gt=0, description="How long v2 records and files live (Segmind: 1 h).")
    job_max_attempts: int = Field(
        2, ge=1, description="Runs allowed per v2 job; a job interrupted by a restart more often is FAILED."
    )

    max_body_bytes: int = Field(64 * 2**20, description="Largest request body (413 beyond).")
    max_json_depth: int = Field(
        32, ge=1, description="Deepest nesting of the JSON body (400 beyond), checked before parsing."
    )
    max_input_bytes: int = Field(32 * 2**20, description="Largest fetched or decoded input file (413 beyond).")
    max_pixels: int = Field(40_000_000, description="Largest input image in pixels (decompression bombs → 400).")
    max_audio_seconds: float = Field(300.0, description="Longest input audio.")
    fetch_connect_timeout_s: float = Field(5.0, description="Connect timeout for input URLs.")
    fetch_read_timeout_s: float = Field(20.0, description="Read timeout for input URLs.")
    fetch_max_redirects: int = Field(3, description="Redirects followed per input URL (each re-checked).")
    fetch_total_timeout_s: float = Field(
        30.0, gt=0, description="Total time allowed to fetch one input URL, redirects included."
    )
    fetch_min_bytes_per_s: float = Field(
        8192.0, ge=0, description="Slowest transfer accepted for an input URL (after its first 2 s)."
    )
    fetch_concurrency: int = Field(16, ge=1, description="Input URLs fetched at once.")
    fetch_queue_max: int = Field(64, ge=0, description="Requests waiting for a fetch slot before 429.")
    fetch_allow: CommaList = Field(
        [],
        description="Networks (CIDR) that input URLs may reach although private or loopback, for on-prem use.",
    )

    trusted_proxies: CommaList = Field(
        ["127.0.0.1/32", "::1/128"],
        description="Networks (CIDR) of reverse proxies whose X-Forwarded-Proto/Host/Prefix are "
        "believed; from any other peer those headers are ignored.",
    )

    _split = field_validator("device", "pipelines", "fetch_allow", "trusted_proxies", mode="before")(_split_commas)

    @field_validator("pipelines")
    @classmethod
    def _known_pipelines(cls, value: list[str]) -> list[str]:
        unknown = sorted(set(value) - set(PIPELINES))
        if unknown:
            raise ValueError(f"unknown pipelines {unknown}; known: {sorted(PIPELINES)}")
        return value

    @field_validator("fetch_allow", "trusted_proxies")
    @classmethod
    def _valid_networks(cls, value: list[str]) -> list[str]:
        for net in value:
            ipaddress.ip_network(net, strict=False)
        return value

    def cost_of(self, slug: str) -> float:
        return self.costs.get(slug, self.default_cost)

    @property
    def weights_dir(self) -> Path:
        return self.weights_root / "tiny" if self.weights == "tiny" else self.weights_root

    @property
    def inputs_dir(self) -> Path:
        """Each queued v2 job's fetched inputs, kept so that a restart can run it again."""
        return self.job_store.with_suffix(".inputs")

    @property
    def allowed_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(net, strict=False) for net in self.fetch_allow]

    @property
    def trusted_proxy_networks(self) -> list[ipaddress.IPv4Network | ipaddress.IPv6Network]:
        return [ipaddress.ip_network(net, strict=False) for net in self.trusted_proxies]
