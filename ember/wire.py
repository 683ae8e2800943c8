"""Typed, versioned messages that cross process boundaries (SDK <-> server <-> replica).

Every field added after API_VERSION 1 must carry a default, so an older SDK keeps talking to a
newer server (tests/unit/test_wire.py checks this). Function inputs and outputs themselves are
cloudpickle blobs framed by `pack_frames`; the server never unpickles user data.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from enum import IntEnum, StrEnum
from typing import Literal

from pydantic import BaseModel, Field

API_VERSION = 1

# HTTP headers of the call protocol.
PARAMS_HEADER = "X-Ember-Params"  # base64 cloudpickle of a class's parameters ("" for none)
VERSION_HEADER = "X-Ember-Api-Version"
PICKLE_CONTENT_TYPE = "application/x-ember-frames"


class Outcome(IntEnum):
    """The first byte of every output frame."""

    OK = 0  # cloudpickle of the return value
    USER_ERROR = 1  # cloudpickle of (exception | None, traceback text, repr of exception)
    PLATFORM_ERROR = 2  # JSON of ErrorInfo: timeouts, crashes, cancellations


def pack_frames(frames: Iterable[bytes]) -> bytes:
    """Concatenate blobs as 4-byte big-endian length + bytes."""
    return b"".join(struct.pack(">I", len(frame)) + frame for frame in frames)


def unpack_frames(data: bytes) -> list[bytes]:
    """Split what `pack_frames` joined; raises ValueError on a truncated body."""
    reader = FrameReader()
    frames = reader.feed(data)
    if reader.pending:
        raise ValueError("truncated frame")
    return frames


class FrameReader:
    """Whole frames out of a body that arrives in arbitrary pieces."""

    def __init__(self) -> None:
        self._buffer = b""

    @property
    def pending(self) -> int:
        """Bytes of a frame not complete yet."""
        return len(self._buffer)

    def feed(self, chunk: bytes) -> list[bytes]:
        self._buffer += chunk
        frames, offset = [], 0
        while len(self._buffer) - offset >= 4:
            (size,) = struct.unpack_from(">I", self._buffer, offset)
            if len(self._buffer) - offset - 4 < size:
                break
            frames.append(self._buffer[offset + 4 : offset + 4 + size])
            offset += 4 + size
        self._buffer = self._buffer[offset:]
        return frames


class ErrorInfo(BaseModel):
    """A platform error, as the body of an HTTP error or a PLATFORM_ERROR frame."""

    type: str
    message: str


class ErrorBody(BaseModel):
    error: ErrorInfo


def platform_error_frame(type_name: str, message: str) -> bytes:
    """An output frame carrying a platform error (timeout, crash, cancellation)."""
    info = ErrorInfo(type=type_name, message=message)
    return bytes([Outcome.PLATFORM_ERROR]) + info.model_dump_json().encode()


class RetryPolicy(BaseModel):
    max_retries: int = 0
    backoff_coefficient: float = 2.0
    initial_delay: float = 1.0
    max_delay: float = 60.0


class ScheduleSpec(BaseModel):
    kind: Literal["cron", "period"]
    cron: str | None = None
    timezone: str = "UTC"
    seconds: float | None = None


class WebEndpointSpec(BaseModel):
    kind: Literal["asgi", "wsgi", "fastapi", "web_server"]
    method: str = "GET"
    port: int | None = None
    startup_timeout: float = 300.0
    requires_proxy_auth: bool = False
    label: str | None = None


class FunctionSpec(BaseModel):
    """Everything the control plane knows about one decorated function or class."""

    name: str
    is_class: bool = False
    methods: list[str] = Field(default_factory=list)
    image: dict[str, object] | None = None
    gpu: str | list[str] | None = None  # Modal's forms; see ember/resources.py
    cpu: float | None = None
    memory: int | None = None
    timeout: float = 300.0
    retries: RetryPolicy = Field(default_factory=RetryPolicy)
    secrets: list[str] = Field(default_factory=list)
    volumes: dict[str, str] = Field(default_factory=dict)
    min_containers: int = 0
    max_containers: int | None = None
    buffer_containers: int = 0
    scaledown_window: float = 60.0
    enable_memory_snapshot: bool = False  # replicas forked from a template (imports done once)
    gpu_snapshot: bool = False  # idle replicas parked (GPU state checkpointed), not stopped
    needs_parameters: bool = False  # a class with an `ember.parameter()` that has no default
    schedule: ScheduleSpec | None = None
    max_inputs: int = 1
    target_inputs: int | None = None
    web: WebEndpointSpec | None = None


class DeployRequest(BaseModel):
    app_name: str
    declared_name: str  # the name given to ember.App(...) in the source, to find it on import
    module: str  # import name of the module that defines the app
    files: dict[str, str] = Field(default_factory=dict)  # relative path -> source text
    functions: list[FunctionSpec]
    ephemeral: bool = False
    # Secret.from_dict / from_dotenv values: stored encrypted on deploy, never kept in the request.
    inline_secrets: dict[str, dict[str, str]] = Field(default_factory=dict)
    # Volumes named with Volume.from_name(..., create_if_missing=True): created on deploy.
    create_volumes: list[str] = Field(default_factory=list)


class DeployResponse(BaseModel):
    app_name: str
    version: int
    functions: list[str]
    urls: dict[str, str] = Field(default_factory=dict)
    # What the server could not honour as asked (no GPU of that type: runs on the CPU; memory
    # limits this host cannot enforce, ...): the CLI prints each.
    warnings: list[str] = Field(default_factory=list)


class FunctionInfo(BaseModel):
    name: str
    is_class: bool
    methods: list[str]
    replicas: dict[str, int] = Field(default_factory=dict)  # state -> count
    queued: int = 0  # inputs waiting for a replica slot (e.g. for a free GPU)
    resources: str | None = None  # what its replicas are given: "gpu H100:1, cpu 2"
    snapshot: str | None = None  # its template: "building", "ready" or "failed: why"
    cold_start: ColdStart | None = None  # the latest
    web_url: str | None = None
    next_run: float | None = None  # Unix time of the next scheduled run
    image: str | None = None  # hash of its image (see `ember image logs`)


class ColdStart(BaseModel):
    """How a replica last became ready: its tier ("fresh", "fork", "restore"), the seconds it
    took, and each phase's seconds."""

    replica: str
    tier: str
    seconds: float
    phases: dict[str, float] = Field(default_factory=dict)
    at: float = 0.0  # Unix time


class AppInfo(BaseModel):
    name: str
    state: Literal["deployed", "stopped"]
    version: int
    ephemeral: bool = False
    created_at: float
    updated_at: float
    functions: list[FunctionInfo] = Field(default_factory=list)


class LogLine(BaseModel):
    id: int
    ts: float
    app: str
    function: str
    replica: str
    text: str


UsageGrouping = Literal["app", "function", "day"]


class UsageRow(BaseModel):
    """Metered usage of one group (an app, a function or a UTC day) over a report's period."""

    app: str | None = None
    function: str | None = None
    day: str | None = None  # YYYY-MM-DD, UTC
    replica_seconds: float = 0.0  # every billed state: starting, ready, draining, parked, ...
    seconds_by_state: dict[str, float] = Field(default_factory=dict)
    gpu_seconds: float = 0.0
    cost_usd: float = 0.0
    inputs: int = 0  # inputs and web requests run (counted per UTC day)
    input_gpu_seconds: float = 0.0  # their time on a replica x the GPUs it held
    input_gpu_cost_usd: float = 0.0
    cost_per_input_usd: float | None = None  # cost_usd / inputs


class UsageReport(BaseModel):
    since: float  # Unix time
    until: float
    by: UsageGrouping
    rows: list[UsageRow] = Field(default_factory=list)
    total: UsageRow = Field(default_factory=UsageRow)
    prices: dict[str, object] = Field(default_factory=dict)  # USD per second


class BudgetSet(BaseModel):
    monthly_usd: float


class BudgetInfo(BaseModel):
    """A monthly budget ("*": the whole server) and what was spent against it this UTC month."""

    scope: str
    monthly_usd: float
    spent_usd: float = 0.0
    state: Literal["ok", "warning", "exceeded"] = "ok"  # warning: 80 % or more


class SpawnResponse(BaseModel):
    call_id: str


class CallStatus(BaseModel):
    call_id: str
    status: Literal["pending", "running", "succeeded", "failed", "cancelled"]


class TokenCreated(BaseModel):
    id: str
    name: str
    token: str  # shown once; only its hash is stored


class TokenInfo(BaseModel):
    id: str
    name: str
    kind: str
    created_at: float
    revoked: bool
    app: str | None = None


class SecretCreate(BaseModel):
    name: str
    values: dict[str, str]
    overwrite: bool = False


class SecretInfo(BaseModel):
    name: str
    keys: list[str]  # names only; values never leave the server
    created_at: float
    updated_at: float


class VolumeCreate(BaseModel):
    name: str
    exist_ok: bool = False


class VolumeInfo(BaseModel):
    name: str
    created_at: float
    committed_at: float | None = None  # Unix time of the last commit


class FileEntryType(StrEnum):
    FILE = "file"
    DIRECTORY = "directory"
    SYMLINK = "symlink"


class FileEntry(BaseModel):
    """One entry of `Volume.listdir`; `path` is relative to the volume's root."""

    path: str
    type: FileEntryType
    size: int
    mtime: float


class UploadStart(BaseModel):
    paths: list[str] = Field(default_factory=list)  # checked at once against existing files
    force: bool = False  # replace files that exist (never directories)


class UploadStarted(BaseModel):
    upload_id: str


class UploadCommit(BaseModel):
    force: bool = False


class ReplicaSpec(BaseModel):
    """What every replica of one pool (app version x function x parameters) runs.

    The same for all of them, so a template process can prepare it once (issue: cold starts).
    """

    app_name: str
    version: int
    declared_name: str
    module: str
    source_dir: str | None
    function: FunctionSpec
    params: str = ""  # base64 cloudpickle of class parameters
    server_url: str
    graceful_shutdown: float = 30.0
    ca_cert: str | None = None  # to verify the server's certificate on nested calls
    volume_root: str | None = None  # where the server keeps volumes; mounts: function.volumes
    volume_storage: str = "local"  # its driver: "local" or "shared" (runtime/volume_storage.py)
    volume_scratch: str | None = None  # working copies on the node's disk (shared storage)


class ReplicaAssignment(BaseModel):
    """What one replica is given: its identity, credentials, GPUs and where to listen."""

    replica_id: str
    token: str
    gpus: list[int] = Field(default_factory=list)  # host indices, also in CUDA_VISIBLE_DEVICES
    listen_fd: int = -1  # an inherited listening socket; -1: bind `bind_host`:0 and report it
    bind_host: str = "127.0.0.1"
    status_fd: int = -1  # where to write ReplicaStatus lines; -1: print them on stdout
    # If set: say "started", then read one byte from it before anything needs the network (the
    # backend connects the replica's network namespace in between).
    network_fd: int = -1
    control_fd: int = -1  # a template's: fork requests come in on it (ForkRequest + fds)


class ForkRequest(BaseModel):
    """Sent to a template with three fds (listening socket, status pipe, log pipe): fork a
    replica with this assignment and these environment variables."""

    assignment: ReplicaAssignment
    env: dict[str, str] = Field(default_factory=dict)


class TemplateEvent(BaseModel):
    """A template's answer on its control socket: a replica forked (with its pid as the
    template sees it), or one of its replicas exited."""

    replica_id: str
    forked: int | None = None
    exit_code: int | None = None


class ReplicaStatus(BaseModel):
    """A replica's report to its backend: started (waiting for its network), ready (with its
    port) or failed (with why)."""

    state: Literal["started", "ready", "failed"]
    port: int | None = None
    message: str = ""
    phases: dict[str, float] = Field(default_factory=dict)  # seconds, with `ready`


SPEC_ENV = "EMBER_REPLICA_SPEC"  # a ReplicaSpec as JSON
ASSIGNMENT_ENV = "EMBER_REPLICA"  # a ReplicaAssignment as JSON
# The replica's id: in every replica and whatever it starts (as Modal's MODAL_TASK_ID).
REPLICA_ID_ENV = "EMBER_REPLICA_ID"
