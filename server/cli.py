"""``facefoundry``: serve the API, manage API keys, install weights.

    facefoundry serve [--port 8000] [--weights tiny] [--no-auth] ...
    facefoundry keys add [KEY] [--credits N] [--models a,b] [--rpm N]
    facefoundry keys list | keys revoke KEY | keys credit KEY N
    facefoundry weights download|check|tiny [ARGS...]

Flags override the FACEFOUNDRY_* environment variables (server/settings.py).
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys

import uvicorn

from server.settings import Settings

# serve flag -> Settings field; a flag left out keeps the environment's value.
SERVE_FLAGS = {
    "--host": ("host", str),
    "--port": ("port", int),
    "--public-base-url": ("public_base_url", str),
    "--keys-file": ("keys_file", str),
    "--weights-root": ("weights_root", str),
    "--weights": ("weights", str),
    "--device": ("device", str),
    "--dtype": ("dtype", str),
    "--pipelines": ("pipelines", str),
    "--queue-max": ("queue_max", int),
    "--request-timeout": ("request_timeout_s", float),
    "--job-store": ("job_store", str),
    "--outputs-dir": ("outputs_dir", str),
    "--job-ttl": ("job_ttl_s", float),
    "--fetch-allow": ("fetch_allow", str),
    "--max-pixels": ("max_pixels", int),
    "--max-audio-seconds": ("max_audio_seconds", float),
    "--idle-unload": ("idle_unload_s", float),
    "--shutdown-grace": ("shutdown_grace_s", float),
    "--log-format": ("log_format", str),
    "--engine": ("engine", str),
    "--store": ("store", str),
    "--ray-address": ("ray_address", str),
    "--ray-ingress-replicas": ("ray_ingress_replicas", int),
    "--ray-num-gpus": ("ray_num_gpus", float),
    "--ray-min-replicas": ("ray_min_replicas", int),
    "--ray-max-replicas": ("ray_max_replicas", int),
    "--ray-max-ongoing-requests": ("ray_max_ongoing_requests", int),
}
SERVE_SWITCHES = {
    "--no-auth": "no_auth",
    "--lazy": "lazy",
    "--allow-noncommercial": "allow_noncommercial",
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="facefoundry", description="Self-hosted Segmind-compatible face API")
    commands = parser.add_subparsers(dest="command", required=True)

    serve = commands.add_parser("serve", help="run the HTTP server")
    for flag, (field, kind) in SERVE_FLAGS.items():
        serve.add_argument(flag, dest=field, type=kind, help=_describe(field))
    for flag, field in SERVE_SWITCHES.items():
        serve.add_argument(flag, dest=field, action="store_const", const=True, help=_describe(field))
    serve.add_argument("--log-level", default="info", choices=["debug", "info", "warning", "error"])

    keys = commands.add_parser("keys", help="manage API keys")
    keys.add_argument("--keys-file", help=_describe("keys_file"))
    keys.add_argument("--store", help=_describe("store"))
    key_commands = keys.add_subparsers(dest="keys_command", required=True)
    add = key_commands.add_parser("add", help="add a key (a new SG_ key is generated when none is given)")
    add.add_argument("key", nargs="?")
    add.add_argument("--credits", type=float, help="balance; unlimited when omitted")
    add.add_argument("--models", help="comma-separated endpoints the key may use; all when omitted")
    add.add_argument("--rpm", type=int, help="requests per minute; uncapped when omitted")
    key_commands.add_parser("list", help="list keys (hashes only)")
    revoke = key_commands.add_parser("revoke", help="revoke a key (by key or id)")
    revoke.add_argument("key")
    credit = key_commands.add_parser("credit", help="add credits to a key (negative to remove)")
    credit.add_argument("key")
    credit.add_argument("amount", type=float)
    key_commands.add_parser("import", help="copy the keys file's keys (hashes, credits, limits) into --store")

    weights = commands.add_parser("weights", help="download, check or generate model weights")
    weights.add_argument("action", choices=["download", "check", "tiny"])
    weights.add_argument("args", nargs=argparse.REMAINDER, help="passed on to the weights tool")
    return parser


def _describe(field: str) -> str:
    return Settings.model_fields[field].description or ""


def serve(options: argparse.Namespace) -> int:
    from server.app import create_app
    from server.logs import configure_logging, quiet_third_party

    overrides = {field: getattr(options, field) for field, _ in SERVE_FLAGS.values()}
    overrides.update({field: getattr(options, field) for field in SERVE_SWITCHES.values()})
    settings = Settings(**{k: v for k, v in overrides.items() if v is not None})
    quiet_third_party()
    configure_logging(options.log_level, settings.log_format)
    log = logging.getLogger("facefoundry")
    if settings.no_auth:
        log.warning("auth is OFF: anyone who can reach %s:%s may use the API", settings.host, settings.port)
    else:
        from server.backends import open_backend

        if not [k for k in open_backend(settings).keys.all() if not k.revoked]:
            log.warning("no API keys in %s: every request will get 401; add one with `facefoundry keys add`",
                        settings.store or settings.keys_file)
    if settings.engine == "ray":
        from server.scale.application import serve_on_ray

        return serve_on_ray(settings)
    # proxy_headers=False: uvicorn would otherwise replace the peer address with X-Forwarded-For,
    # and the app decides itself which peers' forwarded headers to believe (trusted_proxies).
    # log_config=None keeps the one format configured above; timeout_graceful_shutdown bounds how
    # long SIGTERM waits for open requests (the engine finishes their jobs meanwhile).
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_level=options.log_level,
                            log_config=None, access_log=False, proxy_headers=False,
                            timeout_graceful_shutdown=settings.shutdown_grace_s)
    DrainingServer(config, app).run()
    return 0


class DrainingServer(uvicorn.Server):
    """uvicorn's server, telling the engine at SIGTERM/SIGINT to take no new jobs while the
    requests already in flight (v1 clients waiting for their answer) are finished."""

    def __init__(self, config: uvicorn.Config, app):
        super().__init__(config)
        self.app = app

    def handle_exit(self, sig, frame) -> None:
        engine = getattr(self.app.state, "engine", None)
        if engine is not None:
            engine.drain()
        super().handle_exit(sig, frame)


def manage_keys(options: argparse.Namespace) -> int:
    from server.auth import KeyStore, key_weakness, new_key
    from server.backends import open_backend

    chosen = {"keys_file": options.keys_file, "store": options.store}
    settings = Settings(**{field: value for field, value in chosen.items() if value})
    path = settings.store or settings.keys_file
    store = open_backend(settings).keys
    if options.keys_command == "import":
        if not settings.store:
            print("keys import needs --store redis://… (where to copy the keys file's keys)", file=sys.stderr)
            return 2
        copied = sum(store.import_entry(entry) for entry in KeyStore(settings.keys_file).all())
        print(f"copied {copied} keys from {settings.keys_file} to {settings.store}")
        return 0
    if options.keys_command == "add":
        weakness = key_weakness(options.key) if options.key is not None else None
        if weakness:
            print(f"refused: {weakness}", file=sys.stderr)
            return 2
        key = options.key or new_key()
        models = [m.strip() for m in options.models.split(",") if m.strip()] if options.models else None
        entry = store.add(key, credits=options.credits, models=models, rpm=options.rpm)
        if options.key is None:
            print(f"key: {key}  (shown once; only its hash is stored)")
        print(f"added {entry.id} to {path}")
    elif options.keys_command == "list":
        print(f"{'id':12}  {'hint':8}  {'credits':>12}  {'rpm':>5}  {'revoked':7}  models")
        for entry in store.all():
            credits = "unlimited" if entry.credits is None else f"{entry.credits:g}"
            print(f"{entry.id:12}  {entry.hint:8}  {credits:>12}  {entry.rpm or '-':>5}  "
                  f"{'yes' if entry.revoked else 'no':7}  {','.join(entry.models) if entry.models else 'all'}")
    elif options.keys_command == "revoke":
        try:
            entry = store.revoke(options.key)
        except KeyError:
            print("no such key", file=sys.stderr)
            return 1
        print(f"revoked {entry.id}")
    else:
        try:
            entry = store.credit(options.key, options.amount)
        except KeyError:
            print("no such key", file=sys.stderr)
            return 1
        print(f"{entry.id} now has {entry.credits:g} credits")
    return 0


def manage_weights(options: argparse.Namespace) -> int:
    module_name = "pipelines.weights.tiny" if options.action == "tiny" else "pipelines.weights.download"
    try:
        tool = importlib.import_module(module_name)
    except ImportError as exc:
        print(f"the weights tool {module_name} is not available in this installation ({exc})", file=sys.stderr)
        return 2
    args = list(options.args)
    if options.action == "check":
        args = ["--check", *args]
    return tool.main(args) or 0


def main(argv: list[str] | None = None) -> int:
    options = build_parser().parse_args(argv)
    if options.command == "serve":
        return serve(options)
    if options.command == "keys":
        return manage_keys(options)
    return manage_weights(options)


if __name__ == "__main__":
    sys.exit(main())
