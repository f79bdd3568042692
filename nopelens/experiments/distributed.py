"""Sweeps on Ray: a local Ray runtime on this machine, or an existing Ray cluster.

``sweep(grid, out_dir=..., executor="ray")`` runs the configurations as Ray tasks
(:func:`run_on_ray`). Without an ``address`` a local Ray runtime is started for the sweep
(loopback only, no dashboard, no usage statistics) and stopped after it; with one, the sweep
connects to that cluster (``ray start --head`` on a SLURM or Kubernetes allocation, say), uses it
and leaves it running. Each task declares what it needs (one CPU, and one GPU when the
configurations run on ``device="cuda"``), so Ray places one configuration per core or per GPU.

Results stream back as tasks finish (``ray.wait``) and this process, the *driver*, alone appends
them to ``results.jsonl``, once per configuration id; a task that Ray retries after a worker died
is appended once, and a sweep stopped by a dead driver resumes where it stopped. A token batch
that several configurations share (an explicit ``data_seed``) is drawn once by the driver and sent
through Ray's object store (``ray.put``), not pickled into every task; rows come back as small
plain dicts. A configuration of a saved ``model`` sends only its (absolute) paths: the worker
reads the weights and the text itself, so on a cluster every node must see those paths (a shared
filesystem); a node that cannot fails the configuration with one line naming path and host.
Such configurations never share a token batch (each model has its own tokenizer).

Before anything runs, the driver checks that Ray is installed (``pip install 'nopelens[ray]'``),
that the address answers, that the cluster has the GPUs asked for, and that its workers import
the same nopelens version (a tiny remote task); every task checks the version again on the node
that runs it. Each problem is one clear error.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
from collections.abc import Iterator, Sequence
from typing import Any

from nopelens.experiments.grid import config_id, config_label
from nopelens.experiments.runner import (
    ResultWriter,
    _failure,
    config_tokens,
    run_configs,
    tokens_key,
)
from nopelens.validation import InvalidParameterError, NopelensError

logger = logging.getLogger(__name__)

#: How to install Ray for nopelens (named by every "Ray is missing" error).
RAY_INSTALL = "pip install 'nopelens[ray]'"
#: Seconds to wait for a Ray worker to answer the version check.
PROBE_TIMEOUT_S = 120.0
#: Seconds to wait for a TCP connection to a cluster address.
CONNECT_TIMEOUT_S = 5.0
#: How often Ray reruns a task whose worker died (a killed process, a lost node).
MAX_RETRIES = 3
#: At most this many configurations per task (small ones are batched to amortise the cost of a
#: task; a batch is appended when it comes back).
MAX_BATCH = 4


def import_ray() -> Any:
    """The ``ray`` module, or an error that names the extra to install.

    Raises:
        InvalidParameterError: If Ray is not installed.
    """
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    try:
        import ray
    except ImportError as err:
        raise InvalidParameterError(
            f"executor='ray' needs Ray, which is not installed here ({err}). Install the extra: "
            f"{RAY_INSTALL}"
        ) from None
    return ray


def check_address(address: str) -> None:
    """Refuse a malformed address, or one where nothing answers within :data:`CONNECT_TIMEOUT_S` s.

    Raises:
        InvalidParameterError: Naming the address and how to start a cluster.
    """
    if address == "auto":
        return
    text = address.removeprefix("ray://")
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise InvalidParameterError(
            "The 'address' parameter of sweep must be 'HOST:PORT' (a Ray head node, e.g. "
            f"'10.0.0.5:6379'), 'ray://HOST:PORT' or 'auto'. Got {address!r} instead."
        )
    try:
        with socket.create_connection((host.strip("[]"), int(port)), timeout=CONNECT_TIMEOUT_S):
            pass
    except OSError as err:
        raise InvalidParameterError(
            f"The 'address' parameter of sweep: no Ray cluster answers at {address!r} "
            f"({type(err).__name__}: {err}). Start one with `ray start --head --port=6379` on "
            "the head node, or leave the address out to run on a local Ray runtime."
        ) from None


#: Open :func:`keep_local_runtime` blocks, and whether a local runtime was started inside one.
_KEEP: dict[str, int | bool] = {"depth": 0, "started": False}


@contextlib.contextmanager
def keep_local_runtime() -> Iterator[None]:
    """Inside this block, a local Ray runtime that a sweep starts stays up for the next sweeps.

    ``reproduce(..., executor="ray")`` runs several sweeps; without this each would start and
    stop its own local runtime (several seconds each). The runtime is started by the first sweep
    that needs it (none if no sweep runs) and stopped when the outermost block ends. Connections
    to a cluster given by ``address`` are not affected.
    """
    _KEEP["depth"] = int(_KEEP["depth"]) + 1
    try:
        yield
    finally:
        _KEEP["depth"] = int(_KEEP["depth"]) - 1
        if not _KEEP["depth"] and _KEEP["started"]:
            _KEEP["started"] = False
            import ray

            ray.shutdown()


def _drop_auth_notice(record: logging.LogRecord) -> bool:
    """Logging filter: drop Ray's notice that token authentication is on (it is, and stays on).

    A local runtime that nopelens starts listens on loopback only and keeps Ray's default token
    authentication; the notice would reach stderr on every run, even with ``-q``. Every other
    Ray message, the warning that authentication is *off* included, passes.
    """
    return not str(record.msg).startswith("Token authentication is enabled")


_AUTH_LOGGER = "ray._private.authentication.authentication_token_setup"


@contextlib.contextmanager
def ray_runtime(address: str | None = None, *, num_cpus: int | None = None) -> Iterator[Any]:
    """Ray for the duration of a ``with`` block; yields the ``ray`` module.

    An ``address`` where nothing answers is refused first. If this process is already
    connected to Ray (``ray.init`` called by the caller), that runtime is used and left alone.
    Otherwise ``address=None`` starts a local runtime with
    ``num_cpus`` CPUs (default: the usable CPUs) on loopback only, without dashboard and usage
    statistics, and stops it at the end; an ``address`` connects to that cluster and
    disconnects at the end, leaving the cluster running.

    Raises:
        InvalidParameterError: If Ray is not installed or the address does not answer.
    """
    ray = import_ray()
    if address is not None:
        check_address(address)
    if ray.is_initialized():
        yield ray
        return
    quiet = {"include_dashboard": False, "log_to_driver": False, "logging_level": logging.WARNING}
    if address is None:
        auth_logger = logging.getLogger(_AUTH_LOGGER)
        if _drop_auth_notice not in auth_logger.filters:
            auth_logger.addFilter(_drop_auth_notice)
        cpus = num_cpus if num_cpus is not None else len(os.sched_getaffinity(0))
        ray.init(address="local", num_cpus=cpus, _node_ip_address="127.0.0.1", **quiet)
        if _KEEP["depth"]:  # stopped by the enclosing keep_local_runtime block
            _KEEP["started"] = True
            yield ray
            return
    else:
        try:
            ray.init(address=address, **quiet)
        except Exception as err:  # noqa: BLE001 - Ray raises many types here; one message
            first = (str(err).splitlines() or [""])[0]
            raise InvalidParameterError(
                f"The 'address' parameter of sweep: could not connect to the Ray cluster at "
                f"{address!r} ({type(err).__name__}: {first})."
            ) from None
    try:
        yield ray
    finally:
        ray.shutdown()


# The two functions that Ray sends to its workers are compiled from source here, outside any
# module, so that they are pickled by value: a worker without nopelens can still run them and say
# so (a function pickled by reference would fail to unpickle there), and no import hook (the
# type-checking hook of the test suite) wraps them in something that cannot be pickled.
_REMOTE_SOURCE = """
def probe():
    import importlib, sys
    try:
        module = importlib.import_module("nopelens")
    except Exception as err:
        return {"error": f"{type(err).__name__}: {err}", "python": sys.executable}
    return {"version": str(module.__version__), "python": sys.executable}


def job(version, configs, tokens):
    import importlib
    try:
        module = importlib.import_module("nopelens")
    except Exception as err:
        raise RuntimeError(f"this Ray worker cannot import nopelens ({err})") from None
    if str(module.__version__) != version:
        raise RuntimeError(
            f"this Ray worker runs nopelens {module.__version__}, the driver {version}"
        )
    return importlib.import_module("nopelens.experiments.distributed").run_job(configs, tokens)
"""


def _remote_function(name: str) -> Any:
    """``probe`` (the version check) or ``job`` (one task) of :data:`_REMOTE_SOURCE`."""
    namespace: dict[str, Any] = {"__name__": "nopelens_ray_remote"}
    exec(compile(_REMOTE_SOURCE, "<nopelens-ray-remote>", "exec"), namespace)  # noqa: S102
    return namespace[name]


def _make_probe() -> Any:
    """The version check: returns ``version`` (or ``error``) and the worker's ``python``."""
    return _remote_function("probe")


def _make_job() -> Any:
    """The task function: checks nopelens on the node, then runs :func:`run_job`."""
    return _remote_function("job")


_WORKER_READY: dict[str, bool] = {}


def run_job(configs: list[dict[str, Any]], tokens: Any = None) -> list[Any]:
    """What one Ray task runs: its configurations in order, on one torch thread.

    Returns ``(config_id, rows, None)`` for each finished configuration; a configuration that
    raises ends the batch with ``(config_id, None, "ErrorType: message")``, so that the driver
    writes the finished ones and names the one that failed.
    """
    if not _WORKER_READY.get("threads"):
        from nopelens.experiments.workers import init_worker

        init_worker(1)
        _WORKER_READY["threads"] = True
    out: list[Any] = []
    for config in configs:
        try:
            ((cid, rows),) = run_configs([config], tokens)
        except Exception as err:  # noqa: BLE001 - reported by the driver, naming the config
            out.append((config_id(config), None, f"{type(err).__name__}: {err}"))
            break
        out.append((cid, rows, None))
    return out


def check_workers(ray: Any, *, gpus: bool, where: str) -> dict[str, float]:
    """Check the cluster's resources and its workers' nopelens; return its resources.

    Raises:
        InvalidParameterError: If configurations need GPUs and the cluster has none.
        NopelensError: If a worker cannot import nopelens, runs another version, or does not
            answer within :data:`PROBE_TIMEOUT_S` seconds.
    """
    from nopelens import __version__

    resources = {k: float(v) for k, v in ray.cluster_resources().items()}
    if gpus and resources.get("GPU", 0.0) < 1:
        shown = ", ".join(f"{k} {v:g}" for k, v in sorted(resources.items()) if k.isupper())
        raise InvalidParameterError(
            f"The Ray cluster {where} has no GPU ({shown or 'no resources'}), but the "
            "configurations run on device='cuda' and need one GPU each. Use device='cpu', or "
            "a cluster whose nodes have GPUs."
        )
    probe = ray.remote(_make_probe()).options(num_cpus=0, max_retries=0)
    try:
        answer = ray.get(probe.remote(), timeout=PROBE_TIMEOUT_S)
    except Exception as err:  # noqa: BLE001 - GetTimeoutError, RayTaskError, ...
        raise NopelensError(
            f"The Ray workers {where} did not answer a version check within "
            f"{PROBE_TIMEOUT_S:.0f} s ({type(err).__name__}: {str(err).splitlines()[0]})."
        ) from None
    if "error" in answer:
        raise NopelensError(
            f"The Ray workers {where} cannot import nopelens ({answer['error']}; Python "
            f"{answer['python']}). Install the same nopelens on every node: "
            f"pip install 'nopelens[ray]=={__version__}'."
        )
    if answer["version"] != __version__:
        raise NopelensError(
            f"The Ray workers {where} run nopelens {answer['version']}, this process "
            f"{__version__}. Install the same version on every node: "
            f"pip install 'nopelens[ray]=={__version__}'."
        )
    return resources


def _batches(
    pending: Sequence[dict[str, Any]], size: int
) -> list[tuple[tuple[Any, ...] | None, list[dict[str, Any]]]]:
    """The tasks: ``(shared tokens key or None, configurations)``, at most ``size`` each.

    Configurations that share a token batch (an explicit ``data_seed``) go together so that the
    batch is sent once per task; the others are batched in grid order.
    """
    keys = [tokens_key(c) for c in pending]
    counts: dict[tuple[Any, ...], int] = {}
    for key in keys:
        counts[key] = counts.get(key, 0) + 1
    groups: dict[tuple[Any, ...] | None, list[dict[str, Any]]] = {}
    for key, config in zip(keys, pending, strict=True):
        # a saved model's tokens come from its own tokenizer, read by the worker: never shared
        shared = (
            key
            if counts[key] > 1 and config["data_seed"] is not None and config["model"] is None
            else None
        )
        groups.setdefault(shared, []).append(config)
    return [
        (key, configs[i : i + size])
        for key, configs in groups.items()
        for i in range(0, len(configs), size)
    ]


def run_on_ray(
    pending: Sequence[dict[str, Any]],
    writer: ResultWriter,
    *,
    address: str | None = None,
    max_workers: int | None = None,
) -> None:
    """Run configurations as Ray tasks; hand each result to ``writer`` as it comes back.

    Args:
        pending: Complete, validated configurations (:func:`~nopelens.experiments.expand_grid`).
        writer: The driver's :class:`~nopelens.experiments.runner.ResultWriter`.
        address: A running cluster (used and left running), or None for a local runtime
            (started with ``max_workers`` CPUs, default all usable, and stopped at the end).
        max_workers: The most configurations running at once (default: the cluster's CPUs,
            or its GPUs for CUDA configurations).

    Raises:
        InvalidParameterError: Ray missing, address unreachable, no GPU for CUDA configurations.
        NopelensError: Workers that cannot import this nopelens version.
        RuntimeError: A configuration that failed (the finished ones are written).
    """
    from nopelens import __version__

    gpus = any(str(c["device"]).startswith("cuda") for c in pending)
    where = f"at {address!r}" if address is not None else "started on this machine"
    with ray_runtime(address, num_cpus=max_workers) as ray:
        resources = check_workers(ray, gpus=gpus, where=where)
        slots = int(resources.get("GPU" if gpus else "CPU", 1.0)) or 1
        if max_workers is not None:
            slots = min(slots, max_workers)
        size = max(1, min(MAX_BATCH, len(pending) // (4 * slots)))
        task = ray.remote(_make_job()).options(
            num_cpus=1, num_gpus=1 if gpus else 0, max_retries=MAX_RETRIES
        )
        shared: dict[tuple[Any, ...], Any] = {}
        queue = list(reversed(_batches(pending, size)))
        running: dict[Any, list[dict[str, Any]]] = {}
        logger.info(
            "ray: %d configurations in %d tasks, %d at a time", len(pending), len(queue), slots
        )
        try:
            while queue or running:
                while queue and len(running) < 2 * slots:
                    key, configs = queue.pop()
                    tokens = None
                    if key is not None:
                        if key not in shared:
                            shared[key] = ray.put(config_tokens(configs[0]))
                        tokens = shared[key]
                    running[task.remote(__version__, configs, tokens)] = configs
                done, _ = ray.wait(list(running), num_returns=1)
                for ref in done:
                    configs = running.pop(ref)
                    try:
                        results = ray.get(ref)
                    except Exception as err:  # noqa: BLE001 - RayTaskError, WorkerCrashedError
                        if len(configs) == 1:
                            raise _failure(configs[0], _cause(err)) from err
                        cause = _cause(err)
                        raise RuntimeError(
                            f"A Ray task of {len(configs)} configurations "
                            f"({', '.join(config_id(c) for c in configs)}) failed: "
                            f"{type(cause).__name__}: {cause}"
                        ) from err
                    by_id = {config_id(c): c for c in configs}
                    for cid, rows, error in results:
                        if error is not None:
                            raise RuntimeError(
                                f"Configuration {cid} ({config_label(by_id[cid])}) failed: {error}"
                            )
                        writer.add(by_id[cid], rows)
        finally:
            for ref in running:
                with contextlib.suppress(Exception):
                    ray.cancel(ref, force=False)


def _cause(err: BaseException) -> BaseException:
    """The user's exception inside a Ray task error (Ray wraps it), else the error itself."""
    cause = getattr(err, "cause", None)
    return cause if isinstance(cause, BaseException) else err
