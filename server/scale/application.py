"""The Ray Serve application of the scale-out mode: an ingress deployment (the FastAPI app, N
stateless replicas, no GPU) and one deployment per enabled endpoint (``num_gpus`` per replica,
fractional allowed; ``max_ongoing_requests``; autoscaling between the configured bounds).

Started by ``facefoundry serve --engine ray --store redis://…`` (``serve_on_ray``), or by Ray's
own CLI from a config file: ``serve run server/scale/serve.yaml`` (``app_builder``), whose
``deployments:`` section overrides any deployment's options per endpoint.
"""
from __future__ import annotations

import logging
import signal
from pathlib import Path
from typing import Any

from ray import serve

from pipelines import registry
from server.scale.ingress import Ingress
from server.scale.runner import EndpointRunner
from server.settings import Settings

log = logging.getLogger("facefoundry.scale")

APP_NAME = "facefoundry"
INGRESS = "ingress"


def replica_settings(settings: Settings) -> dict[str, Any]:
    """The settings every replica is built from, paths made absolute: a Ray worker does not run
    in the directory ``serve`` was started from."""
    values = settings.model_dump(mode="json")
    for field, value in settings:
        if isinstance(value, Path):
            values[field] = str(value.resolve())
    return values


def scaling_options(settings: Settings) -> dict[str, Any]:
    """A fixed replica count when the bounds are equal, else Serve's autoscaling between them
    (one ongoing request per replica is the target: a replica runs one job at a time)."""
    if settings.ray_min_replicas == settings.ray_max_replicas:
        return {"num_replicas": settings.ray_max_replicas}
    return {"autoscaling_config": {"min_replicas": settings.ray_min_replicas,
                                   "max_replicas": settings.ray_max_replicas,
                                   "target_ongoing_requests": 1}}


def gpus_per_replica(settings: Settings) -> float:
    if settings.ray_num_gpus is not None:
        return settings.ray_num_gpus
    return 1.0 if settings.device[0].startswith("cuda") else 0.0


def build_application(settings: Settings, runner_class: type = EndpointRunner):
    values = replica_settings(settings)
    gpus = gpus_per_replica(settings)
    runners = {}
    for slug in settings.pipelines:
        if not registry.is_built(slug):
            continue
        deployment = serve.deployment(runner_class).options(
            name=slug, ray_actor_options={"num_gpus": gpus, "num_cpus": settings.ray_num_cpus},
            max_ongoing_requests=settings.ray_max_ongoing_requests, max_queued_requests=settings.queue_max,
            graceful_shutdown_timeout_s=settings.shutdown_grace_s, **scaling_options(settings),
        )
        runners[slug] = deployment.bind(slug, values)
    ingress = serve.deployment(Ingress).options(
        name=INGRESS, num_replicas=settings.ray_ingress_replicas, ray_actor_options={"num_cpus": 0},
    )
    return ingress.bind(values, runners)


def app_builder(args: dict[str, Any]):
    """``import_path`` of a Serve config file: ``args`` are Settings fields (the environment's
    FACEFOUNDRY_* fill the rest)."""
    return build_application(Settings(**args))


def serve_on_ray(settings: Settings) -> int:
    """``facefoundry serve --engine ray``: join (or start) a Ray cluster, deploy, serve until
    interrupted."""
    import ray

    if not settings.store:
        raise SystemExit("--engine ray needs --store redis://… : every replica shares the jobs, keys and credits")
    ray.init(address=settings.ray_address)
    serve.start(http_options={"host": settings.host, "port": settings.port})
    log.info("deploying facefoundry on Ray Serve at http://%s:%s", settings.host, settings.port)
    signal.signal(signal.SIGTERM, interrupt)  # docker stop: the same way out as Ctrl-C
    try:
        serve.run(build_application(settings), name=APP_NAME, route_prefix="/", blocking=True)
    except KeyboardInterrupt:
        log.info("stopping: the replicas finish their running jobs (shutdown grace %g s)", settings.shutdown_grace_s)
        serve.shutdown()
    return 0


def interrupt(signum, frame) -> None:
    raise KeyboardInterrupt
