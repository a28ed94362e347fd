"""RayJob creation through the Kubernetes client: the exact body created, the poll sequence, the
status stream and the failure paths (no cluster here, so CustomObjectsApi is a checked mock)."""

from __future__ import annotations

import re
from unittest import mock

import pytest
from kubernetes import client
from kubernetes.client.exceptions import ApiException
from testkit.k8s_schema import CRD_DIR, validate

from flows import job_client
from mvlp_core.contract import StageError
from mvlp_core.spec import RayJobSpec

CLUSTER = RayJobSpec(namespace="mvlp-dev", image="reg/mvlp:1-cuda", cpu_image="reg/mvlp:1-cpu")
COMMAND = job_client.entrypoint("iglue-eval", "/shared/runs/demo/spec.json")


def _body() -> dict:
    return job_client.rayjob_body(
        CLUSTER, "iglue-eval", "mvlp-iglue-eval-demo-ab12", COMMAND, {"mvlp.io/stage": "iglue-eval"}
    )


def _obj(deployment: str, job: str, **extra: str) -> dict:
    return {"status": {"jobDeploymentStatus": deployment, "jobStatus": job, **extra}}


def _api(*statuses: dict) -> mock.Mock:
    api = mock.create_autospec(client.CustomObjectsApi, instance=True)
    api.get_namespaced_custom_object.side_effect = list(statuses)
    return api


def _containers(node):
    if isinstance(node, dict):
        for k, v in node.items():
            if k == "containers":
                yield from v
            else:
                yield from _containers(v)
    elif isinstance(node, list):
        for v in node:
            yield from _containers(v)


def test_body_fills_the_template() -> None:
    body = _body()
    assert body["metadata"]["name"] == "mvlp-iglue-eval-demo-ab12"
    assert body["metadata"]["namespace"] == "mvlp-dev"
    assert body["metadata"]["labels"]["mvlp.io/stage"] == "iglue-eval"
    assert body["spec"]["entrypoint"] == "python -m ray_jobs iglue-eval --spec /shared/runs/demo/spec.json"
    images = {c["image"] for c in _containers(body)}
    assert images == {"reg/mvlp:1-cpu", "reg/mvlp:1-cuda"}
    assert body["spec"]["shutdownAfterJobFinishes"] is True
    if CRD_DIR.exists():
        validate(body)


def test_label_value_is_valid_for_any_spec_name() -> None:
    assert job_client.label_value("unigen-cc3m") == "unigen-cc3m"
    for name in ("_private.spec_", "x" * 80 + "_", ".v2", "a" * 62 + "._b"):
        value = job_client.label_value(name)
        assert len(value) <= 63 and re.fullmatch(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]", value), value


def test_job_name_is_dns_safe_and_keeps_the_run_id() -> None:
    name = job_client.job_name("UniGen_CC3M.v2", "iglue-eval", "0f3a9c2e")
    assert name == "mvlp-iglue-eval-unigen-cc3m-v2-0f3a9c2e"
    # a long spec name is cut, not the run id: two runs of it get two names
    long = "unigen-cc3m-production-sweep-lr3e-5-"
    a, b = (job_client.job_name(long, "iglue-eval", run) for run in ("0f3a9c2e", "7d41b0aa"))
    assert a != b and a.endswith("-0f3a9c2e") and b.endswith("-7d41b0aa")
    assert a == "mvlp-iglue-eval-unigen-cc3m-production-0f3a9c2e"
    for name in (a, b, job_client.job_name("x" * 80, "text-shard", "12345678")):
        assert len(name) <= 47 and re.fullmatch(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?", name), name


def test_creates_polls_streams_and_succeeds() -> None:
    api = _api(
        _obj("Initializing", "", dashboardURL="mvlp-head-svc.mvlp-dev.svc:8265"),
        _obj("Running", "PENDING", dashboardURL="mvlp-head-svc.mvlp-dev.svc:8265"),
        _obj("Running", "RUNNING", dashboardURL="mvlp-head-svc.mvlp-dev.svc:8265"),
        _obj("Running", "RUNNING", dashboardURL="mvlp-head-svc.mvlp-dev.svc:8265"),
        _obj("Complete", "SUCCEEDED", dashboardURL="mvlp-head-svc.mvlp-dev.svc:8265"),
    )
    seen, sleeps = [], []
    body = _body()
    final = job_client.run_rayjob(
        api, body, on_status=seen.append, poll_seconds=7, timeout_seconds=3600, sleep=sleeps.append
    )
    api.create_namespaced_custom_object.assert_called_once_with("ray.io", "v1", "mvlp-dev", "rayjobs", body)
    assert (
        api.get_namespaced_custom_object.call_args_list
        == [mock.call("ray.io", "v1", "mvlp-dev", "rayjobs", "mvlp-iglue-eval-demo-ab12")] * 5
    )
    assert sleeps == [7] * 4
    # one report per change: the repeated RUNNING observation is not reported twice
    assert [(s.deployment, s.state) for s in seen] == [
        ("Initializing", "PENDING"),
        ("Running", "PENDING"),
        ("Running", "RUNNING"),
        ("Complete", "SUCCEEDED"),
    ]
    assert final.dashboard_url == "http://mvlp-head-svc.mvlp-dev.svc:8265"
    api.delete_namespaced_custom_object.assert_not_called()


def test_failed_job_fails_with_its_reason() -> None:
    api = _api(
        _obj("Running", "RUNNING"),
        _obj(
            "Failed", "FAILED", reason="AppFailed", message="Job entrypoint command failed with exit code 1"
        ),
    )
    seen = []
    with pytest.raises(
        StageError, match="Failed/FAILED: AppFailed Job entrypoint command failed with exit code 1"
    ):
        job_client.run_rayjob(
            api, _body(), on_status=seen.append, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
        )
    assert seen[-1].message.startswith("AppFailed")


def test_a_job_kuberay_refuses_fails_at_once_with_kuberays_reason() -> None:
    """ValidationFailed is terminal in KubeRay: no poll until the timeout (7 days by default)."""
    api = _api(_obj("ValidationFailed", "", reason="ValidationFailed", message="invalid RuntimeEnvYAML"))
    with pytest.raises(StageError, match="ended ValidationFailed/.*invalid RuntimeEnvYAML"):
        job_client.run_rayjob(
            api, _body(), on_status=lambda s: None, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
        )
    assert api.get_namespaced_custom_object.call_count == 1


def test_a_retried_task_follows_the_rayjob_its_earlier_try_created() -> None:
    """A retry of the stage's task (the name carries the flow run's id) meets its own RayJob:
    it follows that job to its end instead of failing on the name while the job runs unwatched."""
    body = _body()
    api = _api(
        {"spec": {"entrypoint": body["spec"]["entrypoint"]}},
        _obj("Running", "RUNNING"),
        _obj("Complete", "SUCCEEDED"),
    )
    api.create_namespaced_custom_object.side_effect = ApiException(status=409, reason="AlreadyExists")
    final = job_client.run_rayjob(
        api, body, on_status=lambda s: None, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
    )
    assert final.state == "SUCCEEDED"
    other = _api({"spec": {"entrypoint": "python -m ray_jobs qa --spec /elsewhere.json"}})
    other.create_namespaced_custom_object.side_effect = ApiException(status=409, reason="AlreadyExists")
    with pytest.raises(StageError, match="HTTP 409.*another entrypoint"):
        job_client.run_rayjob(
            other, body, on_status=lambda s: None, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
        )


def test_a_retried_submission_to_the_jobs_api_follows_its_earlier_job() -> None:
    from types import SimpleNamespace

    client = mock.Mock()
    client.submit_job.side_effect = RuntimeError(
        "Job with submission_id mvlp-qa-1 already exists. Please use a different submission_id."
    )
    client.get_job_info.return_value = SimpleNamespace(entrypoint="python -m ray_jobs qa")
    assert (
        job_client._submit_when_ready(client, "python -m ray_jobs qa", "mvlp-qa-1", {}, lambda s: None)
        == "mvlp-qa-1"
    )
    with pytest.raises(StageError, match="refused: Job with submission_id mvlp-qa-1 already exists"):
        job_client._submit_when_ready(client, "python -m ray_jobs translate", "mvlp-qa-1", {}, lambda s: None)


def test_a_run_stopped_while_it_follows_its_rayjob_deletes_it_and_an_error_does_not() -> None:
    """SIGTERM from a Kubernetes cancel or Ctrl-C (BaseExceptions in Prefect) ends the job with the
    run; a dropped connection leaves it running for the retry to follow."""
    from prefect.exceptions import TerminationSignal

    for stop, deleted in (
        (TerminationSignal(15), True),
        (KeyboardInterrupt(), True),
        (ConnectionError("reset"), False),
    ):
        api = _api(_obj("Running", "RUNNING"))

        def interrupted(seconds: float, stop=stop) -> None:
            raise stop

        with pytest.raises(type(stop)):
            job_client.run_rayjob(
                api, _body(), on_status=lambda s: None, poll_seconds=1, timeout_seconds=60, sleep=interrupted
            )
        assert api.delete_namespaced_custom_object.called is deleted, stop


def test_a_run_stopped_while_it_follows_its_jobs_api_job_stops_it() -> None:
    from types import SimpleNamespace

    client = mock.Mock()
    client.submit_job.return_value = "mvlp-qa-1"
    client.get_job_info.return_value = SimpleNamespace(status="RUNNING", message="")

    def interrupted(seconds: float) -> None:
        raise KeyboardInterrupt

    with (
        mock.patch("ray.job_submission.JobSubmissionClient", return_value=client),
        pytest.raises(KeyboardInterrupt),
    ):
        job_client.run_on_ray_cluster(
            "http://head:8265",
            "python -m ray_jobs qa",
            "mvlp-qa-1",
            on_status=lambda s: None,
            poll_seconds=1,
            timeout_seconds=60,
            sleep=interrupted,
        )
    client.stop_job.assert_called_once_with("mvlp-qa-1")


def test_create_forbidden_names_the_rbac_fix() -> None:
    api = _api()
    api.create_namespaced_custom_object.side_effect = ApiException(status=403, reason="Forbidden")
    with pytest.raises(StageError, match="HTTP 403 Forbidden.*create on rayjobs.ray.io"):
        job_client.run_rayjob(
            api, _body(), on_status=print, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
        )
    api.get_namespaced_custom_object.assert_not_called()


def test_timeout_deletes_the_job() -> None:
    api = _api(*[_obj("Initializing", "")] * 3)
    ticks = iter([0.0, 10.0, 20.0, 40.0])
    with pytest.raises(StageError, match="still Initializing after 30s: deleted it"):
        job_client.run_rayjob(
            api,
            _body(),
            on_status=lambda s: None,
            poll_seconds=1,
            timeout_seconds=30,
            sleep=lambda s: None,
            clock=lambda: next(ticks),
        )
    api.delete_namespaced_custom_object.assert_called_once_with(
        "ray.io", "v1", "mvlp-dev", "rayjobs", "mvlp-iglue-eval-demo-ab12"
    )


def test_missing_template_names_the_field() -> None:
    with pytest.raises(StageError, match="execution.rayjob.template"):
        job_client.rayjob_body(
            CLUSTER.model_copy(update={"template": "nowhere/{stage}.yaml"}), "pretrain", "x", "y", {}
        )


RAYJOB_STAGES = {"translate": True, "qa": True, "download": False, "pretrain": True, "iglue-eval": True}


@pytest.mark.parametrize(("stage", "gpu"), RAYJOB_STAGES.items())
def test_every_ray_backed_stage_submits_its_template(stage: str, gpu: bool) -> None:
    """Each stage's RayJob as the submission code creates it: from that stage's template, its
    entrypoint the one job runner, GPU workers on the CUDA image where the stage needs a GPU and
    CPU nodes alone for download, the same create and poll calls, and valid against the CRD."""
    name = f"mvlp-{stage}-demo-ab12"
    body = job_client.rayjob_body(
        CLUSTER,
        stage,
        name,
        job_client.entrypoint(stage, "/shared/runs/demo/spec.json"),
        {"mvlp.io/stage": stage},
    )
    assert body["spec"]["entrypoint"] == f"python -m ray_jobs {stage} --spec /shared/runs/demo/spec.json"
    containers = list(_containers(body))
    gpus = [c for c in containers if c.get("resources", {}).get("limits", {}).get("nvidia.com/gpu")]
    assert bool(gpus) == gpu
    assert {c["image"] for c in gpus} <= {"reg/mvlp:1-cuda"}
    assert {c["image"] for c in containers} == (
        {"reg/mvlp:1-cpu", "reg/mvlp:1-cuda"} if gpu else {"reg/mvlp:1-cpu"}
    )
    if CRD_DIR.exists():
        validate(body)
    api = _api(_obj("Running", "RUNNING"), _obj("Complete", "SUCCEEDED"))
    final = job_client.run_rayjob(
        api, body, on_status=lambda s: None, poll_seconds=1, timeout_seconds=60, sleep=lambda s: None
    )
    api.create_namespaced_custom_object.assert_called_once_with("ray.io", "v1", "mvlp-dev", "rayjobs", body)
    assert (
        api.get_namespaced_custom_object.call_args_list
        == [mock.call("ray.io", "v1", "mvlp-dev", "rayjobs", name)] * 2
    )
    assert final.state == "SUCCEEDED"
