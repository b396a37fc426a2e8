"""The `training-agent` command: `serve` the API, run the `controller`, `train` one project, or the `demo`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Sequence
from uuid import UUID

from training_agent import __version__
from training_agent.core.errors import EXIT_FAILED, EXIT_INTERRUPTED, TrainingAgentError
from training_agent.core.logs import configure_logging
from training_agent.core.settings import Settings, get_settings

logger = logging.getLogger("training_agent.cli")


def _positive_int(text: str) -> int:
    value = int(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text}")
    return value


def _positive_float(text: str) -> float:
    value = float(text)
    if value <= 0:
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True)

    train = commands.add_parser("train", help="train one project (what a worker or Kubernetes Job runs)")
    train.add_argument("--project-id", type=UUID, required=True, help="the project's uuid")
    train.add_argument(
        "--claimed",
        action="store_true",
        help="the caller already moved the project to 'training' (the API does); otherwise the trainer "
        "claims a 'pending_training' project itself",
    )
    train.add_argument("--json", action="store_true", help="print the run's result as one JSON object")

    demo = commands.add_parser("demo", help="create a demo project and train it end to end")
    demo.add_argument(
        "--dataset", help="a dataset zip (local path or gs://) or a folder; default: generated shapes"
    )
    demo.add_argument("--model", default="resnet18", help="torchvision model name (default resnet18)")
    demo.add_argument("--epochs", type=_positive_int, default=3)
    demo.add_argument("--image-size", type=_positive_int, default=64)
    demo.add_argument("--batch-size", type=_positive_int, default=16)
    demo.add_argument("--lr", type=_positive_float, default=0.001, help="learning rate")
    pretrained = demo.add_mutually_exclusive_group()
    pretrained.add_argument(
        "--pretrained",
        dest="pretrained",
        action="store_true",
        default=None,
        help="require pretrained weights (default: use them when cached, else train from scratch)",
    )
    pretrained.add_argument(
        "--no-pretrained", dest="pretrained", action="store_false", help="train from scratch"
    )
    demo.add_argument(
        "--api-url", help="use this running API server (sharing these records) instead of an in-process one"
    )
    demo.add_argument("--timeout", type=_positive_float, default=3600.0, help="seconds to wait for the run")
    demo.add_argument("--json", action="store_true", help="print the outcome as one JSON object")

    weights = commands.add_parser(
        "fetch-weights",
        help="download pretrained ImageNet weights into the torch cache ($TORCH_HOME), for offline training",
    )
    weights.add_argument("models", nargs="+", metavar="MODEL", help="torchvision model names, e.g. resnet18")

    controller = commands.add_parser("controller", help="run the Kubernetes controller (kopf operator)")
    controller.add_argument(
        "--namespace",
        action="append",
        dest="namespaces",
        help="namespace to watch (repeatable; default TRAINING_AGENT_NAMESPACE)",
    )
    controller.add_argument(
        "--all-namespaces",
        action="store_true",
        help="watch TrainingRuns in every namespace (cluster-wide mode)",
    )
    controller.add_argument(
        "--standalone",
        action="store_true",
        help="no peering: for a single replica (several replicas need peering so that one acts)",
    )
    controller.add_argument(
        "--liveness", default="http://0.0.0.0:8080/healthz", help="liveness probe endpoint ('' to disable)"
    )

    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", help="interface to bind (default TRAINING_AGENT_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default TRAINING_AGENT_API_PORT, 8000)")
    return parser


def cmd_train(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.core.records import open_records
    from training_agent.core.storage import ObjectStorage
    from training_agent.trainer.allocator import keep_freed_memory
    from training_agent.trainer.interrupt import StopSignal
    from training_agent.trainer.pipeline import TrainingRun

    if settings.malloc_tuning:
        keep_freed_memory()
    # Kubernetes and the local executor stop a trainer with SIGTERM: checkpoint, then exit for a retry.
    stop = StopSignal()
    stop.install()
    records = open_records(settings)
    run = TrainingRun(
        args.project_id,
        settings=settings,
        records=records,
        storage=ObjectStorage(settings),
        claimed=args.claimed,
        stop=stop,
    )
    result = run.execute()
    if args.json:
        print(json.dumps(result.to_dict(), default=str))
    elif not result.succeeded and result.error:
        print(f"training-agent: {_one_line(result.error['message'])}", file=sys.stderr)
    return result.exit_code


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.core.records import open_records
    from training_agent.demo import DemoOptions, check_options, format_summary, run_demo

    options = DemoOptions(
        dataset=args.dataset,
        model=args.model,
        epochs=args.epochs,
        image_size=args.image_size,
        batch_size=args.batch_size,
        learning_rate=args.lr,
        pretrained=args.pretrained,
        api_url=args.api_url,
        timeout_s=args.timeout,
    )
    check_options(options)
    exit_code, summary = run_demo(options, settings, open_records(settings))
    print(json.dumps(summary, default=str) if args.json else format_summary(summary))
    return exit_code


def cmd_fetch_weights(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.trainer.model import cache_pretrained_weights

    for name in args.models:
        print(f"{name}: {cache_pretrained_weights(name)}")
    return 0


def embedded_stores_warning(settings: Settings) -> str | None:
    """Kubernetes trainers run in their own pods: embedded records or a local bucket cannot reach them."""
    missing = [
        name
        for name, present in (
            ("SUPABASE_URL", settings.uses_supabase),
            ("GCP_BUCKET_NAME", settings.gcp_bucket_name),
        )
        if not present
    ]
    if not missing:
        return None
    return (
        f"{' and '.join(missing)} not set: this process uses the embedded records/local bucket, which "
        "trainer pods cannot see. Set them for a cluster (chart values supabase.existingSecret, gcs.bucket)"
    )


def _warn_on_embedded_stores(settings: Settings) -> None:
    warning = embedded_stores_warning(settings)
    if warning:
        logging.getLogger("training_agent").warning(warning)


def cmd_controller(args: argparse.Namespace, settings: Settings) -> int:
    import asyncio

    from training_agent.controller.operator import run

    _warn_on_embedded_stores(settings)
    asyncio.run(
        run(
            settings,
            namespaces=args.namespaces or [settings.namespace],
            clusterwide=args.all_namespaces,
            standalone=args.standalone,
            liveness_endpoint=args.liveness or None,
        )
    )
    return 0


def cmd_serve(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.api.server import serve

    if settings.executor == "kubernetes":
        from training_agent.core.kube import api_client

        # No kubeconfig or service account: say so in one line now, not in a failed start-up later.
        api_client(settings).close()  # type: ignore[no-untyped-call]
        _warn_on_embedded_stores(settings)
    serve(settings, args.host or settings.api_host, args.port if args.port is not None else settings.api_port)
    return 0


def _one_line(text: str) -> str:
    return " ".join(text.split())


def _report(message: str, exit_code: int) -> int:
    """The CLI's whole answer to a failure: one line on stderr, and the exit code the README lists."""
    print(f"training-agent: {_one_line(message)}", file=sys.stderr)
    return exit_code


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        settings = get_settings()
        configure_logging(settings.log_level)
        handlers = {
            "train": cmd_train,
            "demo": cmd_demo,
            "serve": cmd_serve,
            "controller": cmd_controller,
            "fetch-weights": cmd_fetch_weights,
        }
        handler = handlers[args.command]
        return handler(args, settings)
    except TrainingAgentError as exc:  # ConfigurationError included: EXIT_USAGE
        return _report(str(exc), exc.exit_code)
    except KeyboardInterrupt:
        return _report("Interrupted", EXIT_INTERRUPTED)
    except Exception as exc:  # the last resort: people get one line, the log (at DEBUG) the traceback
        logger.debug("Unexpected error", exc_info=exc)
        where = (
            "traceback above"
            if logger.isEnabledFor(logging.DEBUG)
            else "run with LOG_LEVEL=DEBUG for the traceback"
        )
        return _report(f"{type(exc).__name__}: {exc} ({where})", EXIT_FAILED)
