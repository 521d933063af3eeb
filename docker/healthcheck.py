"""Docker HEALTHCHECK: exit 0 when the server's grpc.health.v1 answers SERVING, else 1 (no binary downloaded)."""

import os
import sys

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

port = os.environ.get("G2P_PORT", "50051")
try:
    with grpc.insecure_channel(f"127.0.0.1:{port}") as channel:
        status = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
except grpc.RpcError as exc:
    print(f"unhealthy: {exc.code().name}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if status == health_pb2.HealthCheckResponse.SERVING else 1)
