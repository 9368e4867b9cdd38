"""``facelink serve``: the server's command line. The port is checked first, with nothing but the standard library's
socket loaded (:mod:`.port_check`), then the options are read into the configuration's schema and the exposure
checked, all before torch and the models load, so a refusal is answered in a fraction of a second; then
:func:`facelink.cloud.serving.server.run` serves until SIGTERM or SIGINT.

Every option whose destination is a :class:`~facelink.cloud.serving.settings.ServerConfig` field sets that field
(:func:`config_from_args`); the others (``--config``, ``--ready-file``, ``--verbose``) are the command's own.
"""
from __future__ import annotations

import argparse
import sys

# Options that set no ServerConfig field of their name: the command's own
COMMAND_OPTIONS = ("config", "ready_file", "verbose")


def build_parser() -> argparse.ArgumentParser:
    ap = argparse.ArgumentParser(prog="facelink serve", description="Run the facelink cloud server (gRPC).")
    ap.add_argument("--config", help="YAML/JSON server configuration (unknown keys are errors)")
    ap.add_argument("--host", help="address to bind (default 127.0.0.1; any other needs TLS and tokens, or "
                    "--insecure)")
    ap.add_argument("--port", type=int, help="0 picks a free port (printed, and written to --ready-file)")
    ap.add_argument("--gallery", help="SQLite gallery file (created if absent), or a postgresql://user@host/db URL "
                    "(PostgreSQL with pgvector: replicas share it, de-duplication of resent frames included)")
    ap.add_argument("--recognizer", help="face recognizer (default mobilefacenet)")
    ap.add_argument("--model", action="append", dest="models", help="codec model to serve (repeatable)")
    ap.add_argument("--threshold", type=float, help="cosine similarity from which a match is reported as the person")
    ap.add_argument("--max-frame-bytes", type=int, help="bytes a container may have (default 1048576)")
    ap.add_argument("--max-pixels", type=int, help="pixels a container may declare, padded (default 327680: "
                    "640x512, VGA full frames either way round; larger frames cost time and memory in proportion)")
    ap.add_argument("--max-image-pixels", type=int, help="pixels an Enroll image may declare in its header")
    ap.add_argument("--max-message-bytes", type=int, help="gRPC's message limit (above the frame and image limits)")
    ap.add_argument("--max-streams", type=int, help="concurrent Recognize streams (more: RESOURCE_EXHAUSTED)")
    ap.add_argument("--stream-window", type=int, help="unanswered frames per stream before it is not read further")
    ap.add_argument("--workers", type=int, help="worker threads for decoding, detection and the gallery (default 2)")
    ap.add_argument("--torch-threads", type=int, help="torch's intra-op threads (default 1: the synthesis and the "
                    "recognizer each on one core, at once; 0: torch's default, one network call at a time)")
    ap.add_argument("--device", help="torch device for the synthesis and the recognizer (default: cuda if present)")
    ap.add_argument("--batching", type=_on_off, metavar="{on,off}", help="micro-batches across streams (off: per "
                    "frame)")
    ap.add_argument("--batch-max", type=int, help="frames per micro-batch at most (default 8)")
    ap.add_argument("--batch-wait-ms", type=float, help="how long a batch waits for more frames (default 2)")
    ap.add_argument("--adapters", action=argparse.BooleanOptionalAction, default=None,
                    help="decode with the rate points' face-domain adapters where a bundle has them (default off: "
                    "measured, they gain no consistent recognition accuracy yet)")
    ap.add_argument("--warmup", action=argparse.BooleanOptionalAction, default=None,
                    help="push zero-latent frames through the recognition path before reporting SERVING, so that no "
                    "client's frame pays for first use (default on; --no-warmup starts a few seconds sooner)")
    ap.add_argument("--auth-tokens", help="token file: sha256:<hex> ROLE NAME per line (facelink tokens add)")
    ap.add_argument("--tls-cert", help="PEM certificate chain")
    ap.add_argument("--tls-key", help="PEM private key")
    ap.add_argument("--client-ca", help="PEM CA: require client certificates signed by it (mutual TLS)")
    ap.add_argument("--insecure", action="store_true", default=None,
                    help="allow a non-loopback address without TLS or tokens")
    ap.add_argument("--metrics-port", type=int, help="serve Prometheus metrics on this port (0: a free one)")
    ap.add_argument("--metrics-host", help="address of the metrics endpoint (default 127.0.0.1)")
    ap.add_argument("--shutdown-grace-s", type=float, help="seconds to answer frames in flight after SIGTERM")
    ap.add_argument("--ready-file", help="written once the server is serving: JSON with the port")
    ap.add_argument("-v", "--verbose", action="store_true", help="log every call (INFO) on stderr")
    return ap


def _on_off(value: str) -> bool:
    if value not in ("on", "off"):
        raise argparse.ArgumentTypeError(f"expected on or off, got {value!r}")
    return value == "on"


def config_from_args(args: argparse.Namespace):
    """The :class:`~facelink.cloud.serving.settings.ServerConfig` of the options: ``--config``'s file, then every
    option given whose destination names a field; raises ConfigError."""
    import dataclasses

    from facelink.cloud.serving.settings import ServerConfig
    from facelink.shared import config as cfgmod

    data = cfgmod.to_dict(cfgmod.load(ServerConfig, args.config)) if args.config else {}
    for field in dataclasses.fields(ServerConfig):
        if getattr(args, field.name, None) is not None:
            data[field.name] = getattr(args, field.name)
    return cfgmod.from_mapping(ServerConfig, data, "server config")


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    from facelink.cloud.serving.port_check import DEFAULT_HOST, DEFAULT_PORT, ServeRefused, check_port_free

    if not args.config:  # host and port are known from the options: a port in use is refused before anything loads
        try:
            check_port_free(DEFAULT_HOST if args.host is None else args.host,
                            DEFAULT_PORT if args.port is None else args.port)
        except ServeRefused as e:
            print(f"facelink serve: {e}", file=sys.stderr)
            return 2
    import logging

    from facelink.cloud.serving.settings import check_exposure
    from facelink.shared import config as cfgmod

    logging.basicConfig(level=logging.INFO if args.verbose else logging.WARNING, stream=sys.stderr,
                        format="%(asctime)s %(name)s %(levelname)s %(message)s")
    try:
        cfg = config_from_args(args)
        check_exposure(cfg)
        if args.config:  # the file may set host and port: checked now, still before torch and the models load
            check_port_free(cfg.host, cfg.port)
    except (OSError, cfgmod.ConfigError, ServeRefused) as e:
        print(f"facelink serve: {e}", file=sys.stderr)
        return 2
    from pathlib import Path

    from facelink.cloud.serving import auth as authmod
    from facelink.cloud.serving.dedup import DedupError
    from facelink.cloud.serving.gallery import GalleryError, GalleryUnavailable
    from facelink.cloud.serving.server import run
    from facelink.shared import registry

    try:
        run(cfg, Path(args.ready_file) if args.ready_file else None)
    except (registry.UnknownModelError, GalleryError, DedupError, ServeRefused, authmod.TokenFileError) as e:
        print(f"facelink serve: {e}", file=sys.stderr)
        return 2
    except GalleryUnavailable as e:
        print(f"facelink serve: the gallery cannot be reached: {e}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
