#!/usr/bin/env bash
# Build bench/loadgen/loadgen (the C++ load generator) from protos/ with Debian's gRPC C++ packages.
#   bench/loadgen/build.sh [--install]    --install: apt-get the packages first when they are missing (as root)
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/../.." && pwd)"
packages="g++ pkg-config protobuf-compiler protobuf-compiler-grpc libprotobuf-dev libgrpc++-dev"
if [[ "${1:-}" == "--install" ]] && ! { command -v grpc_cpp_plugin && pkg-config --exists grpc++; } >/dev/null 2>&1; then
  # shellcheck disable=SC2086
  DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null ||
    { apt-get update -q >/dev/null && DEBIAN_FRONTEND=noninteractive apt-get install -y -q $packages >/dev/null; }
fi
for tool in g++ pkg-config protoc grpc_cpp_plugin; do
  command -v "$tool" >/dev/null || { echo "build.sh: $tool not found (Debian: $packages)" >&2; exit 1; }
done
pkg-config --exists grpc++ protobuf || { echo "build.sh: grpc++/protobuf development files not found (Debian: $packages)" >&2; exit 1; }
out="$here/build/loadgen"
if [[ -x "$out" && "$out" -nt "$here/loadgen.cc" && "$out" -nt "$root/protos/g2p/v1/g2p.proto" ]]; then
  echo "$out"  # up to date
  exit 0
fi
gen="$here/build/gen"
mkdir -p "$gen"
protoc -I "$root/protos" --cpp_out="$gen" --grpc_out="$gen" --plugin=protoc-gen-grpc="$(command -v grpc_cpp_plugin)" \
  "$root/protos/g2p/v1/g2p.proto"
# shellcheck disable=SC2046
g++ -std=c++17 -O2 -I "$gen" "$here/loadgen.cc" "$gen/g2p/v1/g2p.pb.cc" "$gen/g2p/v1/g2p.grpc.pb.cc" \
  -o "$out" $(pkg-config --cflags --libs grpc++ protobuf) -pthread
echo "$out"
