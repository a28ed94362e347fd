"""Run a stage's Ray job (`python -m ray_jobs STAGE --spec ...`) away from this process: as a
KubeRay RayJob created through the Kubernetes API, or on a running Ray cluster through the Ray
Jobs API.

Both paths poll the job until it is terminal, report every status change through `on_status`
(the flows turn it into Prefect logs and a dashboard artifact) and raise `StageError` with the
job's own reason when it fails, so a failed cluster job fails its stage with a readable cause.
"""

from __future__ import annotations

import copy
import logging
import re
import shlex
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

import yaml

from mvlp_core.contract import StageError
from mvlp_core.spec import SPECS_ROOT, RayJobSpec

PROJECT_ROOT = SPECS_ROOT.parent
RAY_GROUP, RAY_VERSION, RAYJOB_PLURAL = "ray.io", "v1", "rayjobs"
# Placeholders in the RayJob templates (infra/k8s/base/rayjobs), replaced by the spec's images.
CPU_IMAGE, GPU_IMAGE = "mvlp-cpu", "mvlp-cuda"
log = logging.getLogger(__name__)
# KubeRay's terminal deployment states (v1.7): ValidationFailed is a template it refuses (a bad
# runtimeEnvYAML, num-cpus both in rayStartParams and resources, ...); it never changes after
RAYJOB_DONE = {"Complete", "Failed", "ValidationFailed"}
RAY_TERMINAL = {"SUCCEEDED", "FAILED", "STOPPED"}


@dataclass
class JobStatus:
    """One observation of a job: what a dashboard shows in its row."""

    job: str
    state: str  # Ray job status: PENDING, RUNNING, SUCCEEDED, FAILED, STOPPED
    deployment: str = ""  # RayJob only: Initializing, Running, Complete, Failed, ...
    message: str = ""
    dashboard_url: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)


StatusFn = Callable[[JobStatus], None]


def entrypoint(stage: str, spec_file: str | Path) -> str:
    return f"python -m ray_jobs {stage} --spec {shlex.quote(str(spec_file))}"


JOB_NAME_LIMIT = 47  # KubeRay derives longer names (cluster, pods) from a RayJob's


def _dns(text: str) -> str:
    return re.sub(r"[^a-z0-9-]+", "-", text.lower()).strip("-")


def label_value(text: str) -> str:
    """`text` as a Kubernetes label value: at most 63 of [A-Za-z0-9_.-], alphanumeric at both
    ends (a spec name may be longer or start with `_` or `.`)."""
    return re.sub(r"^[^A-Za-z0-9]+|[^A-Za-z0-9]+$", "", re.sub(r"[^A-Za-z0-9_.-]+", "-", text)[:63])


def job_name(spec_name: str, stage: str, run_id: str) -> str:
    """A DNS-1123 name under KubeRay's limit, unique per run: `mvlp-<stage>-<spec>-<run>`. A long
    spec name is what gets cut, never the run id: two runs of one spec must not share a name
    (a retry finds its own job by it; joblock tells them apart by it)."""
    head, tail = f"mvlp-{_dns(stage)}", _dns(run_id)
    room = JOB_NAME_LIMIT - len(head) - len(tail) - 2
    spec = _dns(_dns(spec_name)[: max(room, 0)])
    return "-".join(part for part in (head, spec, tail) if part)[:JOB_NAME_LIMIT].strip("-")


def _replace_images(node: Any, images: dict[str, str]) -> None:
    if isinstance(node, dict):
        for key, value in node.items():
            if key in ("containers", "initContainers"):
                for c in value:
                    c["image"] = images.get(c.get("image"), c.get("image"))
            _replace_images(value, images)
    elif isinstance(node, list):
        for v in node:
            _replace_images(v, images)


def rayjob_body(
    cluster: RayJobSpec, stage: str, name: str, command: str, labels: dict[str, str]
) -> dict[str, Any]:
    """The RayJob to create: the stage's template with name, namespace, entrypoint and images set."""
    path = Path(cluster.template.replace("{stage}", stage))
    path = path if path.is_absolute() else PROJECT_ROOT / path
    if not path.exists():
        raise StageError(
            f"{stage}: RayJob template {path} not found; set execution.rayjob.template to a RayJob YAML "
            "({stage} is replaced by the stage name), e.g. infra/k8s/base/rayjobs/{stage}.yaml"
        )
    body = copy.deepcopy(yaml.safe_load(path.read_text(encoding="utf-8")))
    meta = body.setdefault("metadata", {})
    meta.update(name=name, namespace=cluster.namespace)
    meta.setdefault("labels", {}).update(labels)
    body["spec"]["entrypoint"] = command
    _replace_images(body["spec"], {CPU_IMAGE: cluster.cpu_image, GPU_IMAGE: cluster.image})
    return body


def _rayjob_status(obj: dict[str, Any], name: str, dashboard: str | None) -> JobStatus:
    st = obj.get("status") or {}
    url = dashboard or st.get("dashboardURL")
    if url and not url.startswith("http"):
        url = f"http://{url}"
    return JobStatus(
        job=name,
        state=st.get("jobStatus", "PENDING") or "PENDING",
        deployment=st.get("jobDeploymentStatus", "") or "",
        message=" ".join(x for x in (st.get("reason", ""), st.get("message", "")) if x),
        dashboard_url=url,
        extra={k: st[k] for k in ("rayClusterName", "jobId", "failed", "succeeded") if k in st},
    )


def run_rayjob(
    api: Any,
    body: dict[str, Any],
    *,
    on_status: StatusFn,
    poll_seconds: float,
    timeout_seconds: float,
    dashboard_url: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> JobStatus:
    """Create the RayJob with `api` (a kubernetes CustomObjectsApi) and poll it to the end. A
    retried task finds its flow run's RayJob created by the earlier try, and follows that one."""
    from kubernetes.client.exceptions import ApiException

    name, ns = body["metadata"]["name"], body["metadata"]["namespace"]
    where = f"RayJob {ns}/{name}"
    try:
        api.create_namespaced_custom_object(RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, body)
    except ApiException as err:
        if err.status != 409 or not _same_rayjob(api, body):
            _refused(err, where)
    with _ended_with_the_run(
        lambda: api.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, name), where
    ):
        return _follow_rayjob(
            api, name, ns, where, on_status, poll_seconds, timeout_seconds, dashboard_url, sleep, clock
        )


@contextmanager
def _ended_with_the_run(end_job: Callable[[], Any], where: str) -> Iterator[None]:
    """A run cancelled or killed while it follows its job (SIGTERM from a Kubernetes cancel,
    Ctrl-C: Prefect raises them as BaseExceptions) ends the job too, before its GPU slot is
    freed: a job left running would hold GPUs that the next run, given the slot, also takes.
    Errors (a dropped connection) leave the job running, for a retry to follow."""
    try:
        yield
    except BaseException as err:
        if not isinstance(err, Exception):
            log.warning("%s: the run was stopped (%s); ending its job", where, type(err).__name__)
            try:
                end_job()
            except Exception as cleanup:  # noqa: BLE001 - the run's own stop is what propagates
                log.warning("%s: could not end it (%s); end it by hand", where, cleanup)
        raise


def _same_rayjob(api: Any, body: dict[str, Any]) -> bool:
    """Whether the RayJob of `body`'s name that exists runs `body`'s entrypoint (the names carry
    the flow run's id, so it is this run's, submitted by an earlier try of the same task)."""
    from kubernetes.client.exceptions import ApiException

    meta = body["metadata"]
    try:
        obj = api.get_namespaced_custom_object(
            RAY_GROUP, RAY_VERSION, meta["namespace"], RAYJOB_PLURAL, meta["name"]
        )
    except ApiException:
        return False
    return obj.get("spec", {}).get("entrypoint") == body["spec"]["entrypoint"]


def _refused(err: Any, where: str) -> NoReturn:
    hint = {
        403: "the service account needs create on rayjobs.ray.io in this namespace (infra/k8s/base/rbac.yaml)",
        404: "is the KubeRay operator (ray.io/v1 CRDs) installed and does the namespace exist?",
        409: "a RayJob with this name and another entrypoint exists; delete it or re-run (names carry the run id)",
    }.get(err.status, "check the cluster connection (kubeconfig or in-cluster service account)")
    raise StageError(f"could not create {where}: HTTP {err.status} {err.reason}; {hint}") from None


def _follow_rayjob(
    api: Any,
    name: str,
    ns: str,
    where: str,
    on_status: StatusFn,
    poll_seconds: float,
    timeout_seconds: float,
    dashboard_url: str | None,
    sleep: Callable[[float], None],
    clock: Callable[[], float],
) -> JobStatus:
    """Poll the RayJob to its end: its status when it succeeded, else a StageError with KubeRay's reason."""
    from kubernetes.client.exceptions import ApiException

    deadline = clock() + timeout_seconds
    last: tuple[str, str, str] | None = None
    while True:
        try:
            obj = api.get_namespaced_custom_object(RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, name)
        except ApiException as err:
            if err.status == 404:
                raise StageError(f"{where} disappeared while running (deleted?); re-run the stage") from None
            raise StageError(f"could not read {where}: HTTP {err.status} {err.reason}") from None
        status = _rayjob_status(obj, name, dashboard_url)
        if (status.state, status.deployment, status.message) != last:
            last = (status.state, status.deployment, status.message)
            on_status(status)
        if status.deployment in RAYJOB_DONE or status.deployment == "Suspended":
            if status.deployment == "Complete" and status.state == "SUCCEEDED":
                return status
            raise StageError(
                f"{where} ended {status.deployment}/{status.state}: {status.message or 'no reason given'}. "
                f"See the job's logs (`kubectl -n {ns} logs -l job-name={name}` or the Ray dashboard"
                f"{' ' + status.dashboard_url if status.dashboard_url else ''}), fix the cause and re-run the stage."
            )
        if clock() > deadline:
            api.delete_namespaced_custom_object(RAY_GROUP, RAY_VERSION, ns, RAYJOB_PLURAL, name)
            raise StageError(
                f"{where} still {status.deployment or status.state} after {timeout_seconds:.0f}s: deleted it; "
                "raise execution.timeout_seconds or check why it does not progress (GPU nodes available?)"
            )
        sleep(poll_seconds)


def kubernetes_api() -> Any:
    """CustomObjectsApi from the in-cluster service account, else the local kubeconfig."""
    from kubernetes import client, config

    try:
        config.load_incluster_config()
    except config.ConfigException:
        try:
            config.load_kube_config()
        except (config.ConfigException, OSError) as err:
            raise StageError(
                f"execution.submit is rayjob but no Kubernetes credentials were found ({err}); run inside the "
                "cluster (service account mvlp-runner) or point KUBECONFIG at the cluster"
            ) from None
    return client.CustomObjectsApi()


def _submit_when_ready(
    client: Any,
    command: str,
    submission_id: str,
    runtime_env: dict[str, Any],
    sleep: Callable[[float], None],
    attempts: int = 8,
) -> str:
    """submit_job, retried while the head answers 503 "no available agent" (a cluster that is
    still starting its dashboard agents), 1 s, 2 s, 4 s, ... apart."""
    for attempt in range(attempts):
        try:
            return client.submit_job(entrypoint=command, submission_id=submission_id, runtime_env=runtime_env)
        except RuntimeError as err:
            if "already exists" in str(err) and _same_job(client, submission_id, command):
                return submission_id  # this flow run's own job, submitted before a retry of this task
            if "No available agent" not in str(err) or attempt == attempts - 1:
                raise StageError(f"Ray job submission {submission_id} refused: {err}") from None
            sleep(min(2.0**attempt, 30.0))
    raise AssertionError("unreachable")


def _same_job(client: Any, submission_id: str, command: str) -> bool:
    """Whether the Ray job `submission_id` that exists runs `command` (see `_same_rayjob`)."""
    try:
        return client.get_job_info(submission_id).entrypoint == command
    except RuntimeError:
        return False


def run_on_ray_cluster(
    address: str,
    command: str,
    submission_id: str,
    *,
    on_status: StatusFn,
    poll_seconds: float,
    timeout_seconds: float,
    runtime_env: dict[str, Any] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> JobStatus:
    """Submit to a running Ray cluster (Ray Jobs API at `address`) and poll to the end."""
    from ray.job_submission import JobSubmissionClient

    try:
        client = JobSubmissionClient(address)
    except (ConnectionError, RuntimeError, ValueError) as err:
        raise StageError(
            f"cannot reach the Ray Jobs API at {address} ({err}); start the cluster or fix execution.jobs_address"
        ) from None
    job_id = _submit_when_ready(client, command, submission_id, runtime_env or {}, sleep)
    with _ended_with_the_run(lambda: client.stop_job(job_id), f"Ray job {job_id}"):
        return _follow_ray_job(client, job_id, address, on_status, poll_seconds, timeout_seconds, sleep)


def _follow_ray_job(
    client: Any,
    job_id: str,
    address: str,
    on_status: StatusFn,
    poll_seconds: float,
    timeout_seconds: float,
    sleep: Callable[[float], None],
) -> JobStatus:
    """Poll the Ray job to its end: its status when it succeeded, else a StageError with its log tail."""
    url = f"{address.rstrip('/')}/#/jobs/{job_id}"
    deadline = time.monotonic() + timeout_seconds
    last = None
    while True:
        info = client.get_job_info(job_id)
        status = JobStatus(job=job_id, state=str(info.status), message=info.message or "", dashboard_url=url)
        if (status.state, status.message) != last:
            last = (status.state, status.message)
            on_status(status)
        if status.state in RAY_TERMINAL:
            if status.state == "SUCCEEDED":
                return status
            tail = "\n".join(client.get_job_logs(job_id).strip().splitlines()[-20:])
            raise StageError(
                f"Ray job {job_id} {status.state}: {status.message or 'no reason given'}\n"
                f"last log lines:\n{tail}\nFull logs: `ray job logs {job_id} --address {address}` or {url}"
            )
        if time.monotonic() > deadline:
            client.stop_job(job_id)
            raise StageError(
                f"Ray job {job_id} still {status.state} after {timeout_seconds:.0f}s: stopped it; "
                "raise execution.timeout_seconds or check the cluster's free resources"
            )
        sleep(poll_seconds)
