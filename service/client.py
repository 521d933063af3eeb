"""A Python client of the G2P service, and its command line.

    python -m service.client hello world                 # word<TAB>phonemes lines
    echo -e "speech\\nsynthesis" | python -m service.client --beam 5 --nbest 2
    python -m service.client --stream --target 127.0.0.1:50051 --timeout 5 tensor
    python -m service.client --text "Dr. Smith paid $5.20." [--ipa | --no-stress] [--json]
    echo "One text per line." | python -m service.client --text        # texts from stdin

Library:

    from service.client import G2PClient
    with G2PClient("127.0.0.1:50051") as c:
        print(c.transcribe(["hello"]))          # [["HH AH0 L OW1", ...]]
        print(c.phonemize(["Hello, world!"]).results[0].phonemes)   # HH AH0 L OW1 , | W ER1 L D !
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from types import TracebackType

import grpc
from google.protobuf import json_format
from grpc_health.v1 import health_pb2, health_pb2_grpc

from service.api.g2p.v1 import g2p_pb2 as pb
from service.api.g2p.v1 import g2p_pb2_grpc as pb_grpc

SERVICE_CONFIG = {
    # every replica a DNS name resolves to (``dns:///g2p:50051``: Compose replicas, a Kubernetes headless Service)
    "loadBalancingConfig": [{"round_robin": {}}],
    "methodConfig": [
        {
            "name": [{"service": "g2p.v1.G2P"}, {"service": "inference.GRPCInferenceService"}],
            # a replica that stopped or restarted: try another (or the same, back) before giving up
            "retryPolicy": {
                "maxAttempts": 5,
                "initialBackoff": "0.1s",
                "maxBackoff": "2s",
                "backoffMultiplier": 2,
                "retryableStatusCodes": ["UNAVAILABLE"],
            },
        }
    ],
}
"""Round robin over the target's addresses, and retries of UNAVAILABLE: safe, since every RPC here is read-only."""
CHANNEL_OPTIONS = [("grpc.enable_retries", 1), ("grpc.service_config", json.dumps(SERVICE_CONFIG))]


def channel(
    target: str,
    tls_ca: Path | None = None,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    server_name: str | None = None,
) -> grpc.Channel:
    """A channel to the server (``CHANNEL_OPTIONS``): plaintext, or TLS when any TLS file is given (``tls_ca``: the
    CA that signed the server's certificate, default the system's roots; ``tls_cert``/``tls_key``: this client's
    certificate and key, for a server with mutual TLS; ``server_name``: the name the server's certificate carries,
    when the target's host is another, e.g. an IP address)."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError("tls_cert and tls_key go together")
    if tls_ca is None and tls_cert is None:
        return grpc.insecure_channel(target, options=CHANNEL_OPTIONS)
    credentials = grpc.ssl_channel_credentials(
        root_certificates=tls_ca.read_bytes() if tls_ca is not None else None,
        private_key=tls_key.read_bytes() if tls_key is not None else None,
        certificate_chain=tls_cert.read_bytes() if tls_cert is not None else None,
    )
    name = [("grpc.ssl_target_name_override", server_name)] if server_name else []
    return grpc.secure_channel(target, credentials, options=[*CHANNEL_OPTIONS, *name])


class G2PClient:
    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        timeout: float = 10.0,
        tls_ca: Path | None = None,
        tls_cert: Path | None = None,
        tls_key: Path | None = None,
        server_name: str | None = None,
        wait_for_ready: bool = False,
    ) -> None:
        """``tls_*``, ``server_name``: see ``channel``. ``wait_for_ready``: a call made while no server is reachable
        (a replica restarting) waits for one, within ``timeout``, instead of failing at once with UNAVAILABLE: what a
        service calling replicas that restart wants (bench/results/faults.md). Off by default, so that what can never
        connect (a wrong address, a refused TLS handshake) fails at once with UNAVAILABLE, not at the deadline."""
        self.channel = channel(target, tls_ca, tls_cert, tls_key, server_name)
        self.timeout = timeout
        self.wait_for_ready = wait_for_ready
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
        return self.stub.Generate(self.request(words, **kw), timeout=self.timeout, wait_for_ready=self.wait_for_ready)  # type: ignore[arg-type]

    def stream(self, words: Iterable[str], **kw: int | str | None) -> Iterator[pb.GenerateStreamResponse]:
        request = self.request(words, **kw)  # type: ignore[arg-type]
        yield from self.stub.GenerateStream(request, timeout=self.timeout, wait_for_ready=self.wait_for_ready)

    def transcribe(self, words: Iterable[str], **kw: int | str | None) -> list[list[str]]:
        """The n-best phoneme strings of each word."""
        return [[h.text for h in o.hypotheses] for o in self.generate(words, **kw).outputs]

    def phonemize(
        self,
        texts: Iterable[str],
        alphabet: int = pb.ALPHABET_ARPABET,
        lexicon: dict[str, str] | None = None,
        model: str = "",
        version: int = 0,
    ) -> pb.PhonemizeResponse:
        """Texts -> tokens, spoken words and pronunciations (``lexicon``: this request's own word -> ARPAbet)."""
        options = pb.PhonemizeOptions(alphabet=alphabet, lexicon=lexicon or {})  # type: ignore[arg-type]
        request = pb.PhonemizeRequest(texts=list(texts), options=options, model=model, model_version=version)
        return self.stub.Phonemize(request, timeout=self.timeout, wait_for_ready=self.wait_for_ready)

    def get_model(self, model: str = "", version: int = 0) -> pb.ModelInfo:
        return self.stub.GetModel(
            pb.GetModelRequest(model=model, version=version), timeout=self.timeout, wait_for_ready=self.wait_for_ready
        )

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


def _tls(args: argparse.Namespace) -> tuple[Path | None, Path | None, Path | None, str | None]:
    return args.tls_ca, args.tls_cert, args.tls_key, args.tls_server_name


def _text_main(args: argparse.Namespace) -> int:
    """``--text``: one line per text, its flat phoneme string (or its whole result as one JSON object)."""
    texts = args.text or [line.rstrip("\n") for line in sys.stdin if line.strip()]
    if not texts:
        print("error: no texts given (--text arguments or stdin lines)", file=sys.stderr)
        return 2
    alphabet = pb.ALPHABET_IPA if args.ipa else pb.ALPHABET_ARPABET_NO_STRESS if args.no_stress else pb.ALPHABET_ARPABET
    try:
        with G2PClient(args.target, args.timeout, *_tls(args), wait_for_ready=args.wait_for_ready) as client:
            for chunk in _chunks(texts, max(args.batch, 1)):
                response = client.phonemize(chunk, alphabet, model=args.model, version=args.version)
                for text, result in zip(chunk, response.results, strict=True):
                    if args.json:
                        body = json_format.MessageToDict(result, preserving_proto_field_name=True)
                        print(json.dumps({"text": text, **body}, ensure_ascii=False))
                    else:
                        print(result.phonemes)
    except grpc.RpcError as exc:
        print(f"error: {exc.code().name}: {exc.details()}", file=sys.stderr)
        return 1
    return 0


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
    ap.add_argument(
        "--wait-for-ready",
        action="store_true",
        help="wait (within --timeout) for an unreachable server, e.g. one restarting, instead of failing",
    )
    ap.add_argument("--tls-cert", type=Path, default=None, help="client certificate (a server with mutual TLS)")
    ap.add_argument("--tls-key", type=Path, default=None, help="the client certificate's private key")
    ap.add_argument("--tls-server-name", default=None, help="the name in the server's certificate, if not the host")
    ap.add_argument("--batch", type=int, default=256, help="words (or texts) per request (default %(default)s)")
    ap.add_argument(
        "--text",
        nargs="*",
        default=None,
        metavar="TEXT",
        help="phonemize running text (Phonemize): these texts, or one per stdin line when none given",
    )
    alphabet = ap.add_mutually_exclusive_group()
    alphabet.add_argument("--ipa", action="store_true", help="with --text: IPA instead of ARPAbet")
    alphabet.add_argument("--no-stress", action="store_true", help="with --text: ARPAbet without stress digits")
    ap.add_argument("--json", action="store_true", help="with --text: every token, word and source as JSON lines")
    args = ap.parse_args(argv)
    if (args.tls_cert is None) != (args.tls_key is None):
        ap.error("--tls-cert and --tls-key go together")
    if args.text is not None:
        return _text_main(args)
    words = args.words or [line.strip() for line in sys.stdin if line.strip()]
    if not words:
        print("error: no words given (arguments or stdin lines)", file=sys.stderr)
        return 2
    kw: dict[str, int | str | None] = {
        "beam_size": args.beam, "nbest": args.nbest, "model": args.model, "version": args.version,
    }  # fmt: skip
    try:
        with G2PClient(args.target, args.timeout, *_tls(args), wait_for_ready=args.wait_for_ready) as client:
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
