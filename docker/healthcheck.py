"""Docker HEALTHCHECK: exit 0 when the server's grpc.health.v1 answers SERVING, else 1 (no binary downloaded).

It reads the server's own settings from the environment. With ``G2P_HEALTH_PORT`` (the server's plaintext health side
port, which answers while the main port refuses a flood; the images set it) it asks there, in plaintext. Else it asks
``G2P_PORT``, and when ``G2P_TLS_CERT`` is set it speaks TLS to 127.0.0.1, trusting ``G2P_HEALTHCHECK_CA`` (default:
``G2P_TLS_CERT`` itself, right for a self-signed server certificate) and checking the name
``G2P_HEALTHCHECK_SERVER_NAME`` (default ``localhost``) in the server's certificate. With mutual TLS
(``G2P_TLS_CLIENT_CA``) it presents ``G2P_HEALTHCHECK_CERT`` / ``G2P_HEALTHCHECK_KEY``, a client certificate signed by
that CA.
"""

import os
import sys
from pathlib import Path

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc


def channel() -> grpc.Channel:
    env = os.environ
    if int(env.get("G2P_HEALTH_PORT") or -1) > 0:
        return grpc.insecure_channel(f"127.0.0.1:{env['G2P_HEALTH_PORT']}")
    target = f"127.0.0.1:{env.get('G2P_PORT', '50051')}"
    server_cert = env.get("G2P_TLS_CERT")
    if not server_cert:
        return grpc.insecure_channel(target)
    ca = Path(env.get("G2P_HEALTHCHECK_CA") or server_cert).read_bytes()
    cert, key = env.get("G2P_HEALTHCHECK_CERT"), env.get("G2P_HEALTHCHECK_KEY")
    if env.get("G2P_TLS_CLIENT_CA") and not (cert and key):
        print("unhealthy: the server wants client certificates (G2P_TLS_CLIENT_CA): set G2P_HEALTHCHECK_CERT and "
              "G2P_HEALTHCHECK_KEY", file=sys.stderr)  # fmt: skip
        sys.exit(1)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=ca,
        private_key=Path(key).read_bytes() if key and cert else None,
        certificate_chain=Path(cert).read_bytes() if key and cert else None,
    )
    name = env.get("G2P_HEALTHCHECK_SERVER_NAME") or "localhost"
    return grpc.secure_channel(target, credentials, options=[("grpc.ssl_target_name_override", name)])


try:
    with channel() as ch:
        status = health_pb2_grpc.HealthStub(ch).Check(health_pb2.HealthCheckRequest(service=""), timeout=2).status
except grpc.RpcError as exc:
    print(f"unhealthy: {exc.code().name}", file=sys.stderr)
    sys.exit(1)
sys.exit(0 if status == health_pb2.HealthCheckResponse.SERVING else 1)
