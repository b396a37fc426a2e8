"""The `training-agent` command: `serve` the API, run the `controller`, `train` one project, or the `demo`."""

from __future__ import annotations

import argparse
import json
import logging
import sys
from collections.abc import Callable, Sequence
from typing import Any
from uuid import UUID

from training_agent import __version__
from training_agent.core.errors import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    ConfigurationError,
    TrainingAgentError,
)
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


class _Parser(argparse.ArgumentParser):
    """An ArgumentParser that can finish its help when the help is shown (`before_help`): the demo's names
    the trainer's options and their defaults, which no other command should import just to start."""

    before_help: Callable[[], None] | None = None

    def format_help(self) -> str:
        if self.before_help is not None:
            self.before_help()
        return super().format_help()


def _key_value(text: str) -> tuple[str, Any]:
    """`--option KEY=VALUE`: VALUE read as JSON when it is JSON (3, 0.5, true, null), else as a string."""
    key, sep, value = text.partition("=")
    key = key.strip()
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"expected KEY=VALUE, e.g. recipe=auto or epochs=5; got {text!r}")
    try:
        return key, json.loads(value)
    except ValueError:
        return key, value


# The demo's named flags: each sets one training option (project metadata key), as --option KEY=VALUE does.
_DEMO_FLAGS = {
    "preferred_model": "--model",
    "epochs": "--epochs",
    "image_size": "--image-size",
    "batch_size": "--batch-size",
    "learning_rate": "--lr",
    "pretrained": "--pretrained/--no-pretrained",
}

_DEMO_DESCRIPTION = """\
Create a demo project and train it end to end through the HTTP API. The project is an
ordinary one: its metadata holds only what the demo needs to finish in under a minute on a
CPU (a small image size, few epochs, pretrained weights only when cached) and what you
pass; every other training option is the project default (the table below)."""


def _add_demo_parser(commands: argparse._SubParsersAction[_Parser]) -> None:
    demo = commands.add_parser(
        "demo",
        help="create a demo project and train it end to end",
        description=_DEMO_DESCRIPTION,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    demo.add_argument(
        "--dataset",
        metavar="PATH|gs://...",
        help="a dataset zip (local path or gs://) or a folder (default: generated coloured shapes)",
    )
    # Defaults None: the key is then the demo's quick setting or the project default (shown in the help).
    flags = {
        "preferred_model": demo.add_argument(
            "--model", dest="preferred_model", metavar="NAME", help="torchvision model name"
        ),
        "epochs": demo.add_argument("--epochs", type=_positive_int, metavar="N", help="epochs to train"),
        "image_size": demo.add_argument(
            "--image-size", type=_positive_int, metavar="N", help="images are resized to N x N px"
        ),
        "batch_size": demo.add_argument("--batch-size", type=_positive_int, metavar="N", help="batch size"),
        "learning_rate": demo.add_argument(
            "--lr", dest="learning_rate", type=_positive_float, metavar="X", help="learning rate"
        ),
    }
    pretrained = demo.add_mutually_exclusive_group()
    flags["pretrained"] = pretrained.add_argument(
        "--pretrained",
        dest="pretrained",
        action="store_true",
        default=None,
        help="require pretrained ImageNet weights, downloaded when not cached",
    )
    pretrained.add_argument(
        "--no-pretrained",
        "--from-scratch",
        dest="pretrained",
        action="store_false",
        help="train from scratch",
    )
    demo.add_argument(
        "--option",
        dest="options",
        action="append",
        type=_key_value,
        metavar="KEY=VALUE",
        help="set a training option (repeatable; the last of a key wins): VALUE is read as JSON when it is "
        "JSON (3, 0.5, true, null), else as a string (recipe=auto); null leaves the key to the project "
        "default. The keys and their defaults are listed below",
    )
    demo.add_argument(
        "--nproc-per-node",
        type=_positive_int,
        metavar="N",
        help="train with N processes on this machine under torchrun, each with its share of every batch "
        "(gloo on a CPU, one GPU each on GPUs) (default: TRAINING_AGENT_LOCAL_NPROC_PER_NODE, 1)",
    )
    demo.add_argument(
        "--api-url",
        metavar="URL",
        help="use this running API server (sharing these records) instead of an in-process one "
        "(default: serve one on a free loopback port)",
    )
    demo.add_argument(
        "--timeout",
        type=_positive_float,
        default=3600.0,
        metavar="S",
        help="seconds to wait for the run (default: 3600)",
    )
    demo.add_argument("--json", action="store_true", help="print the outcome as one JSON object")
    helps = {key: action.help for key, action in flags.items()}

    def show_defaults() -> None:
        from training_agent.demo import training_options_help

        table, shown = training_options_help()
        for key, action in flags.items():
            action.help = f"{helps[key]} [{key}] (default: {shown[key]})"
        demo.epilog = table

    demo.before_help = show_defaults


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="training-agent", description=__doc__)
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, parser_class=_Parser)

    train = commands.add_parser("train", help="train one project (what a worker or Kubernetes Job runs)")
    train.add_argument("--project-id", type=UUID, required=True, help="the project's uuid")
    train.add_argument(
        "--claimed",
        action="store_true",
        help="the caller already moved the project to 'training' (the API does); otherwise the trainer "
        "claims a 'pending_training' project itself",
    )
    train.add_argument("--json", action="store_true", help="print the run's result as one JSON object")
    train.add_argument(
        "--no-progress-bar",
        action="store_true",
        help="never draw the live progress bar, even on a terminal (the trainers a server starts share its "
        "terminal); without a terminal there is none anyway",
    )

    _add_demo_parser(commands)

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

    from training_agent.cli_projects import add_projects_parser  # it uses this module's argument types

    add_projects_parser(commands)

    commands.add_parser(
        "torchrun",
        help="torchrun (every torchrun option, then -m training_agent train ...) with rank 0's exit code as "
        "its own: how several GPUs and nodes start the trainer",
        add_help=False,
    )
    serve = commands.add_parser("serve", help="run the HTTP API (uvicorn)")
    serve.add_argument("--host", help="interface to bind (default TRAINING_AGENT_API_HOST, 127.0.0.1)")
    serve.add_argument("--port", type=int, help="port (default TRAINING_AGENT_API_PORT, 8000)")
    return parser


def demo_training_options(args: argparse.Namespace) -> dict[str, Any]:
    """The training options the demo's command line gives: its named flags and every --option; a key that
    both set is refused (which one was meant?)."""
    from training_agent.demo_summary import shown_value

    flags = {key: getattr(args, key) for key in _DEMO_FLAGS if getattr(args, key) is not None}
    options = dict(args.options or [])
    for key, value in options.items():
        if key in flags:
            raise ConfigurationError(
                f"{_DEMO_FLAGS[key]} and --option {key}={shown_value(value)} both set {key}: give it once"
            )
    return {**flags, **options}


def cmd_demo(args: argparse.Namespace, settings: Settings) -> int:
    from training_agent.core.records import open_records
    from training_agent.demo import DemoOptions, check_options, run_demo
    from training_agent.demo_summary import format_summary
    from training_agent.progress_bar import progress_view

    options = DemoOptions(
        dataset=args.dataset,
        training=demo_training_options(args),
        api_url=args.api_url,
        timeout_s=args.timeout,
    )
    if args.nproc_per_node is not None and args.api_url:  # flags alone: before the checks that import torch
        raise ConfigurationError(
            "--nproc-per-node applies to the demo's own server; with --api-url, set "
            "TRAINING_AGENT_LOCAL_NPROC_PER_NODE on that server instead"
        )
    check_options(options)
    if args.nproc_per_node is not None:
        settings = settings.model_copy(update={"local_nproc_per_node": args.nproc_per_node})
    with progress_view(announce_epochs=True) as view:
        exit_code, summary = run_demo(options, settings, open_records(settings), view)
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
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv[:1] == ["torchrun"]:  # torchrun's own options follow: not this parser's to read
        from training_agent.trainer.launch import torchrun

        return torchrun(argv[1:])
    args = build_parser().parse_args(argv)
    from training_agent.cli_projects import cmd_projects
    from training_agent.cli_train import cmd_train

    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_format)
        handlers = {
            "train": cmd_train,
            "demo": cmd_demo,
            "serve": cmd_serve,
            "controller": cmd_controller,
            "fetch-weights": cmd_fetch_weights,
            "projects": cmd_projects,
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
