"""A Python client of the G2P service, and its command line.

    python -m service.client hello world                 # word<TAB>phonemes lines
    echo -e "speech\\nsynthesis" | python -m service.client --beam 5 --nbest 2
    python -m service.client --stream --target 127.0.0.1:50051 --timeout 5 tensor

Library:

    from service.client import G2PClient
    with G2PClient("127.0.0.1:50051") as c:
        print(c.transcribe(["hello"]))          # [["HH AH0 L OW1", ...]]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import grpc
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc


class G2PClient:
    def __init__(self, target: str = "127.0.0.1:50051", timeout: float = 10.0, tls_ca: Path | None = None) -> None:
        if tls_ca is not None:
            self.channel = grpc.secure_channel(target, grpc.ssl_channel_credentials(tls_ca.read_bytes()))
        else:
            self.channel = grpc.insecure_channel(target)
        self.timeout = timeout
        self.stub = pb_grpc.G2PStub(self.channel)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def __enter__(self) -> G2PClient:
        return self

    def __exit__(self, *exc: type[BaseException] | BaseException | TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        self.channel.close()

    @staticmethod
    def request(
        words: Iterable[str],
        beam_size: int | None = None,
        nbest: int | None = None,
        max_output_tokens: int | None = None,
        model: str = "",
        version: int = 0,
    ) -> pb.GenerateRequest:
        options = pb.GenerateOptions()
        if beam_size is not None:
            options.beam_size = beam_size
        if nbest is not None:
            options.num_hypotheses = nbest
        if max_output_tokens is not None:
            options.max_output_tokens = max_output_tokens
        return pb.GenerateRequest(inputs=list(words), options=options, model=model, model_version=version)

    def generate(self, words: Iterable[str], **kw: int | str | None) -> pb.GenerateResponse:
        return self.stub.Generate(self.request(words, **kw), timeout=self.timeout)  # type: ignore[arg-type]

    def stream(self, words: Iterable[str], **kw: int | str | None) -> Iterator[pb.GenerateStreamResponse]:
        yield from self.stub.GenerateStream(self.request(words, **kw), timeout=self.timeout)  # type: ignore[arg-type]

    def transcribe(self, words: Iterable[str], **kw: int | str | None) -> list[list[str]]:
        """The n-best phoneme strings of each word."""
        return [[h.text for h in o.hypotheses] for o in self.generate(words, **kw).outputs]

    def get_model(self, model: str = "", version: int = 0) -> pb.ModelInfo:
        return self.stub.GetModel(pb.GetModelRequest(model=model, version=version), timeout=self.timeout)

    def wait_serving(self, timeout: float) -> bool:
        """Block until the server's health says SERVING (True) or ``timeout`` passes (False)."""
        try:
            grpc.channel_ready_future(self.channel).result(timeout=timeout)
            status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=timeout).status
        except (grpc.FutureTimeoutError, grpc.RpcError):
            return False
        return bool(status == health_pb2.HealthCheckResponse.SERVING)


def _chunks(items: list[str], n: int) -> Iterator[list[str]]:
    for i in range(0, len(items), n):
        yield items[i : i + n]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m service.client", description="Print word<TAB>phonemes lines.")
    ap.add_argument("words", nargs="*", help="words to transcribe (default: one per line on stdin)")
    ap.add_argument("--target", default="127.0.0.1:50051", help="server address (default %(default)s)")
    ap.add_argument("--beam", type=int, default=None, help="beam size (default: the server's, greedy)")
    ap.add_argument("--nbest", type=int, default=None, help="hypotheses per word (with --beam)")
    ap.add_argument("--stream", action="store_true", help="use GenerateStream (greedy, token by token)")
    ap.add_argument("--timeout", type=float, default=10.0, help="seconds per request (default %(default)s)")
    ap.add_argument("--model", default="", help="model name (default: the server's)")
    ap.add_argument("--version", type=int, default=0, help="pin a model version (default: newest)")
    ap.add_argument("--tls-ca", type=Path, default=None, help="CA certificate for a TLS server")
    ap.add_argument("--batch", type=int, default=256, help="words per request (default %(default)s)")
    args = ap.parse_args(argv)
    words = args.words or [line.strip() for line in sys.stdin if line.strip()]
    if not words:
        print("error: no words given (arguments or stdin lines)", file=sys.stderr)
        return 2
    kw: dict[str, int | str | None] = {
        "beam_size": args.beam, "nbest": args.nbest, "model": args.model, "version": args.version,
    }  # fmt: skip
    try:
        with G2PClient(args.target, args.timeout, args.tls_ca) as client:
            for chunk in _chunks(words, max(args.batch, 1)):
                if args.stream:
                    finals = {m.index: m.final for m in client.stream(chunk, **kw) if m.WhichOneof("event") == "final"}
                    outputs = [finals[i] for i in range(len(chunk))]
                else:
                    outputs = list(client.generate(chunk, **kw).outputs)
                for word, out in zip(chunk, outputs, strict=True):
                    for h in out.hypotheses:
                        extra = f"\t{h.score:.4f}" if (args.nbest or 1) > 1 else ""
                        print(f"{word}\t{h.text}{extra}")
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
