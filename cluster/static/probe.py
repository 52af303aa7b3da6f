"""Asks a gRPC target whether it is a TFF executor service, or still answers, without TensorFlow.

TFF's generated stubs live in a package whose import loads TensorFlow (seconds, and unwanted in
the cluster layer), so the probe sends GetExecutor as raw bytes: an empty GetExecutorRequest
serializes to b"". A TFF 0.87 worker answers NOT_FOUND ("No cardinality provided for `clients`
placement"); a gRPC server without TFF's service answers UNIMPLEMENTED; an HTTP/1 server or
nothing at all leaves the channel UNAVAILABLE. The worker logs two error lines per GetExecutor
probe, so liveness, asked every half second during a round, uses a call it answers silently.
"""

from __future__ import annotations

import dataclasses
import enum

import grpc

_GET_EXECUTOR = "/tensorflow_federated.v0.ExecutorGroup/GetExecutor"
# gRPC's standard health check; TFF's worker answers UNIMPLEMENTED, and logs nothing.
_HEALTH_CHECK = "/grpc.health.v1.Health/Check"
_EMPTY_REQUEST = b""
_EXECUTOR_ANSWERS = (grpc.StatusCode.OK, grpc.StatusCode.NOT_FOUND)
_NOT_YET_REACHABLE = (
    grpc.StatusCode.UNAVAILABLE,
    grpc.StatusCode.DEADLINE_EXCEEDED,
    grpc.StatusCode.RESOURCE_EXHAUSTED,
)
_NOT_GRPC_HINTS = ("HTTP/2", "http1")  # gRPC's words for a peer that does not speak HTTP/2


class Verdict(enum.Enum):
    EXECUTOR = "a TFF executor service"
    UNREACHABLE = "unreachable"
    NOT_EXECUTOR = "not a TFF executor service"


@dataclasses.dataclass(frozen=True)
class ProbeResult:
    verdict: Verdict
    detail: str  # the gRPC status and message behind the verdict


def probe_executor(channel: grpc.Channel, timeout_s: float) -> ProbeResult:
    """One GetExecutor call on `channel`, bounded by `timeout_s`; fails at once if unreachable."""
    get_executor = channel.unary_unary(_GET_EXECUTOR)  # no (de)serializers: raw bytes
    try:
        get_executor(_EMPTY_REQUEST, timeout=timeout_s)
        code, details = grpc.StatusCode.OK, "answered GetExecutor"
    except grpc.RpcError as error:
        if not isinstance(error, grpc.Call):
            return ProbeResult(Verdict.UNREACHABLE, str(error))
        code, details = error.code(), error.details() or ""
    detail = f"{code.name}: {details}"
    if code in _EXECUTOR_ANSWERS:
        return ProbeResult(Verdict.EXECUTOR, detail)
    if code in _NOT_YET_REACHABLE and not any(hint in details for hint in _NOT_GRPC_HINTS):
        return ProbeResult(Verdict.UNREACHABLE, detail)
    return ProbeResult(Verdict.NOT_EXECUTOR, detail)


def answers(channel: grpc.Channel, timeout_s: float) -> bool:
    """Whether the server behind `channel` answers at all within `timeout_s` (riding out a
    reconnection), whatever it answers."""
    try:
        channel.unary_unary(_HEALTH_CHECK)(_EMPTY_REQUEST, timeout=timeout_s, wait_for_ready=True)
    except grpc.RpcError as error:
        return isinstance(error, grpc.Call) and error.code() not in _NOT_YET_REACHABLE
    return True
