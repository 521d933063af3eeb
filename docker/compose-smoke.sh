#!/usr/bin/env bash
# The real run of docker-compose.yml: build and start the server, call it, re-export the shipped checkpoint as a
# new version and see the running server serve it, then shut down. Prints timings and image sizes.
#   docker/compose-smoke.sh            (on a machine without a registry, run ../shared/tools/docker-offline-base first)
set -euo pipefail
cd "$(dirname "$0")/.."
say() { printf '\n== %s\n' "$*"; }

if ls /opt/wheels/torch-2.13.0+cpu-*.whl >/dev/null 2>&1 && ! ls docker/wheels/torch-*.whl >/dev/null 2>&1; then
  cp /opt/wheels/torch-2.13.0+cpu-*.whl docker/wheels/   # the offline image installs torch from here
fi
export G2P_UID G2P_GID
G2P_UID=$(id -u) G2P_GID=$(id -g)   # the re-exported version in ./models belongs to the caller, not root
trap 'docker compose --profile export --profile client down --remove-orphans >/dev/null 2>&1 || true; rm -rf models/g2p/.smoke-*' EXIT

say "build"
docker compose build g2p
docker compose --profile export build export

say "docker compose up --wait (time from up to healthy)"
start=$(date +%s.%N)
docker compose up -d --wait g2p
echo "healthy after $(echo "$(date +%s.%N) - $start" | bc) s"
docker compose ps

say "client"
docker compose run --rm client hello world speech synthesis
version_before=$(docker compose exec -T g2p python -c "
from service.client import G2PClient
print(G2PClient('127.0.0.1:50051').get_model().default_version)")
echo "serving version $version_before"

say "re-export (profile export): the shipped checkpoint becomes the next version"
docker compose --profile export run --rm export export --checkpoint "${G2P_CHECKPOINT:-checkpoints/cmudict-default/best.pt}" \
  --name g2p --root /app/models --variants --parity-words 200 --no-determinism-check
new=$(ls -d models/g2p/[0-9]* | sed 's#.*/##' | sort -n | tail -1)
for _ in $(seq 60); do
  v=$(docker compose exec -T g2p python -c "
from service.client import G2PClient
print(G2PClient('127.0.0.1:50051').get_model().default_version)")
  [ "$v" = "$new" ] && break
  sleep 1
done
echo "server now serves version $v (exported: $new)"
[ "$v" = "$new" ]
docker compose run --rm client hello world

say "images"
docker image ls --format '{{.Repository}}:{{.Tag}}  {{.Size}}' | grep -E '^g2p-'

say "SIGTERM: graceful stop, exit code 0"
docker compose stop g2p
code=$(docker inspect -f '{{.State.ExitCode}}' "$(docker compose ps -a -q g2p)")
docker compose logs g2p | tail -3
echo "server exit code: $code"
[ "$code" = "0" ]

say "down"
docker compose down
rm -rf "models/g2p/$new"   # the smoke run's version; the committed bundle stays
echo "compose smoke run: OK"
