"""The Kubernetes manifests (config/k8s/) and the TorchServe configs they mount agree with each
other and with what TorchServe, KServe and the handler need. No cluster here: the plain
Kubernetes objects are checked against Kubernetes' own JSON schemas (kubernetes-validate, pinned in
requirements-test.txt, ships them offline), and every cross-file fact is checked by hand."""

from __future__ import annotations

import hashlib
import ipaddress
import re

import kubernetes_validate
import pytest
import yaml

import front_door
from serving import paths, tsctl

K8S = paths.CONFIG_DIR / "k8s"
WORKER_MB = 400  # resident memory of one worker serving bert-base (docs/operations.md)
FRONTEND_MB = 250  # TorchServe's JVM frontend
MODEL = "kor_ner"
KUBERNETES_VERSION = "1.30"  # the API the manifests target (HPA autoscaling/v2, NetworkPolicy v1)


def documents(name: str) -> dict[str, dict]:
    """The YAML documents of config/k8s/<name>, by kind."""
    docs = [d for d in yaml.safe_load_all((K8S / name).read_text(encoding="utf-8")) if d]
    kinds = {d["kind"]: d for d in docs}
    assert len(kinds) == len(docs), f"{name}: one document per kind expected"
    return kinds


CONTAINERFILE = paths.ROOT / "container" / "Containerfile"
# the entrypoint's settings, and those it shares with the health check (the config's path)
ENTRYPOINT = (paths.ROOT / "container" / "entrypoint.py", paths.ROOT / "container" / "kor_ner_runtime.py")
# <registry>/kor-ner/torchserve:<TorchServe version>-ner<model version>, as container/Containerfile says,
# and the digest of the pushed image (the tag says what it is, the digest which one runs)
IMAGE = re.compile(
    r"(?:[^/]+/)?kor-ner/torchserve:(?P<torchserve>\d+\.\d+\.\d+)-ner(?P<model>\d+(?:\.\d+)*)"
    r"@sha256:[0-9a-f]{64}"
)
IMAGE_UID = 10001  # the image's numeric user and group (container/Containerfile's USER), 10000 or more


def found(pattern: str, text: str) -> str:
    """The first group of ``pattern``'s first match in ``text`` (lines as ^...$); failing the test without one."""
    match = re.search(pattern, text, re.M)
    assert match, f"no line matches {pattern}"
    return match.group(1)


def containerfile() -> dict:
    """What the manifests must agree with: EXPOSE, USER, the model version, the entrypoint's defaults."""
    text = CONTAINERFILE.read_text(encoding="utf-8")
    entry = "\n".join(path.read_text(encoding="utf-8") for path in ENTRYPOINT)
    defaults = dict(re.findall(r'os\.environ\.get\("(KOR_NER_\w+)", "([^"]+)"\)', entry))
    return {
        "expose": {int(p) for p in found(r"^EXPOSE (.*)$", text).split()},
        "user": found(r"^USER (\S+)$", text),
        "model_version": found(r"^ARG MODEL_VERSION=(\S+)$", text),
        "entrypoint_defaults": defaults,
        "tag_scheme": "kor-ner/torchserve:0.12.0-ner<MODEL_VERSION>" in text,
    }


def torchserve_version() -> str:
    # the image's lock: a line is "torchserve==0.12.0 \" followed by its hashes
    return found(r"^torchserve==([^\s\\]+)", (paths.ROOT / "requirements-serve.txt").read_text(encoding="utf-8"))


def megabytes(quantity: str) -> float:
    parsed = re.fullmatch(r"(\d+(?:\.\d+)?)(Mi|Gi|M|G)", quantity)
    assert parsed, quantity
    number, unit = parsed.groups()
    return float(number) * {"Mi": 1.048576, "Gi": 1073.741824, "M": 1, "G": 1000}[unit]


def port(address: str) -> int:
    return int(address.rsplit(":", 1)[1])


def handler_threads() -> int:
    model_config = yaml.safe_load((paths.CONFIG_DIR / "model-config.yaml").read_text(encoding="utf-8"))
    return model_config["handler"]["torch_threads"]


def check_resources(resources: dict, workers: int, extra_mb: int = 0) -> None:
    """Workers x torch threads fit the CPU limit; the memory limit holds the workers and the frontend."""
    assert workers * handler_threads() <= float(resources["limits"]["cpu"])
    assert megabytes(resources["limits"]["memory"]) >= workers * WORKER_MB + FRONTEND_MB + extra_mb
    assert resources["requests"] == resources["limits"]  # Guaranteed: the last pod to be evicted
    assert {"cpu", "memory", "ephemeral-storage"} <= set(resources["limits"])


# --------------------------------------------------------------------------- plain Deployment


def test_plain_manifests_pass_the_kubernetes_schemas():
    for doc in documents("deployment.yaml").values():
        kubernetes_validate.validate(doc, KUBERNETES_VERSION, strict=True)  # raises ValidationError naming the field


def test_the_schema_check_would_catch_a_misspelt_field():
    deployment = documents("deployment.yaml")["Deployment"]
    deployment["spec"]["template"]["spec"]["containers"][0]["resource"] = {}  # "resources", misspelt
    with pytest.raises(kubernetes_validate.ValidationError, match="resource"):
        kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)


def test_deployment_serves_the_pod_config_it_mounts():
    kinds = documents("deployment.yaml")
    pod = kinds["Deployment"]["spec"]["template"]
    [container] = pod["spec"]["containers"]
    props = tsctl.read_properties(K8S / "pod-config.properties")
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "config"]
    [volume] = [v for v in pod["spec"]["volumes"] if v["name"] == "config"]
    image = containerfile()["entrypoint_defaults"]

    assert "args" not in container and "command" not in container  # the image's entrypoint runs TorchServe
    assert image["KOR_NER_CONFIG"] == f"{mount['mountPath']}/config.properties"  # where it reads its config
    assert props["metrics_config"] == f"{mount['mountPath']}/metrics.yaml"
    assert volume["configMap"]["name"] == "kor-ner-config"
    assert props["model_store"] == image["KOR_NER_MODEL_STORE"] and props["load_models"] == f"{MODEL}.mar"

    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    assert props["inference_address"] == f"http://0.0.0.0:{ports['inference']}"
    assert props["metrics_address"] == f"http://0.0.0.0:{ports['metrics']}"
    assert props["management_address"].startswith("http://127.0.0.1:")  # never off the pod
    assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(ports["metrics"])
    assert props["disable_token_authorization"] == "true" and props["enable_envvars_config"] == "false"
    assert pod["spec"]["terminationGracePeriodSeconds"] >= stop_seconds(container, image)


def stop_seconds(container: dict, image: dict) -> float:
    """The longest a stop of the image takes under this container's environment: it drains
    (KOR_NER_DRAIN_MAX, never less than the window KOR_NER_DRAIN_MIN), finishes what it took
    (KOR_NER_FINISH_MAX, then 5 s before the entrypoint kills HAProxy), stops TorchServe
    (KOR_NER_STOP_TIMEOUT). The pod's grace period must hold it."""
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    value = {
        name: float(env.get(name, image[name]))
        for name in ("KOR_NER_DRAIN_MIN", "KOR_NER_DRAIN_MAX", "KOR_NER_FINISH_MAX", "KOR_NER_STOP_TIMEOUT")
    }
    drain = max(value["KOR_NER_DRAIN_MIN"], value["KOR_NER_DRAIN_MAX"])
    return drain + value["KOR_NER_FINISH_MAX"] + 5 + value["KOR_NER_STOP_TIMEOUT"]


@pytest.mark.parametrize("layout", ["deployment", "kserve"])
def test_the_grace_period_holds_a_whole_stop_and_the_drain_outlasts_the_endpoints(layout):
    """The grace period is the stop's worst case (the arithmetic beside it in the manifest) plus
    some spare, never so much more that a hung pod lingers; the window in which new connections
    are still answered after SIGTERM is at least 10 s (endpoints and ingress controllers lag)."""
    pod, container = PODS[layout]()
    image = containerfile()["entrypoint_defaults"]
    worst = stop_seconds(container, image)
    grace = pod["terminationGracePeriodSeconds"]
    assert worst + 5 <= grace <= worst + 30, (worst, grace)
    env = {e["name"]: e["value"] for e in container.get("env", [])}
    assert float(env.get("KOR_NER_DRAIN_MIN", image["KOR_NER_DRAIN_MIN"])) >= 10
    assert "lifecycle" not in container  # no preStop sleep on top: the window is the entrypoint's


@pytest.mark.parametrize("layout", ["deployment", "kserve"])
def test_probes_go_through_the_front_door(layout):
    """Readiness and startup on the v2 ready route (a READY worker, 503 while draining), liveness
    on /ping, all httpGet on HAProxy's health door (plain HTTP even with door TLS on, its own
    connection limit, so an inference flood cannot starve the probes; with the door dead, they
    fail); a startup probe long enough for a model load, so liveness never kills a pod still loading."""
    _, container = PODS[layout]()
    number = front_door.HEALTH_PORT
    door = {number} | {p["name"] for p in container["ports"] if p.get("name") and p["containerPort"] == number}
    for name, path in (
        ("startupProbe", "/v2/health/ready"),
        ("readinessProbe", "/v2/health/ready"),
        ("livenessProbe", "/ping"),
    ):
        probe = container[name]
        assert set(probe) - {"periodSeconds", "timeoutSeconds", "failureThreshold"} == {"httpGet"}, name
        assert probe["httpGet"]["path"] == path and probe["httpGet"]["port"] in door, name
        assert probe["timeoutSeconds"] < probe["periodSeconds"], name
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 300  # 5 minutes to load
    ready = container["readinessProbe"]
    assert ready["periodSeconds"] * ready["failureThreshold"] <= 10  # not ready within 10 s of a failure


def test_manifests_run_the_image_this_build_makes():
    """One image name and tag scheme: the Containerfile's, with the pinned TorchServe and the
    model version it packages by default; the same image in both manifests."""
    built = containerfile()
    assert built["tag_scheme"]
    deployment = documents("deployment.yaml")["Deployment"]["spec"]["template"]["spec"]["containers"]
    runtime = documents("kserve.yaml")["ServingRuntime"]["spec"]["containers"]
    images = {c["image"] for c in deployment + runtime}
    assert len(images) == 1, images
    match = IMAGE.fullmatch(images.pop())
    assert match and match["torchserve"] == torchserve_version() and match["model"] == built["model_version"]
    for c in deployment + runtime:
        assert {p["containerPort"] for p in c["ports"]} <= built["expose"]
        assert c["imagePullPolicy"] == "IfNotPresent"  # by digest: that image, without asking the registry again


def test_deployment_runs_unprivileged_and_sized_for_its_workers():
    kinds = documents("deployment.yaml")
    spec = kinds["Deployment"]["spec"]["template"]["spec"]
    [container] = spec["containers"]
    assert spec["securityContext"]["runAsNonRoot"] is True and spec["securityContext"]["runAsUser"] != 0
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    model_config = yaml.safe_load((paths.CONFIG_DIR / "model-config.yaml").read_text(encoding="utf-8"))
    check_resources(container["resources"], workers=model_config["minWorkers"])


def test_service_hpa_and_network_policy_point_at_the_deployment():
    kinds = documents("deployment.yaml")
    deployment = kinds["Deployment"]
    [container] = deployment["spec"]["template"]["spec"]["containers"]
    # the health door is the kubelet's (probes are not subject to the Service or NetworkPolicies)
    container_ports = {p["name"]: p["containerPort"] for p in container["ports"] if p["name"] != "health"}
    labels = deployment["spec"]["template"]["metadata"]["labels"]

    assert kinds["Service"]["spec"]["selector"] == labels
    assert {p["targetPort"] for p in kinds["Service"]["spec"]["ports"]} == set(container_ports)
    target = kinds["HorizontalPodAutoscaler"]["spec"]["scaleTargetRef"]
    assert (target["kind"], target["name"]) == ("Deployment", deployment["metadata"]["name"])
    policy = kinds["NetworkPolicy"]["spec"]
    assert policy["podSelector"]["matchLabels"] == labels
    assert {p["port"] for rule in policy["ingress"] for p in rule["ports"]} == set(container_ports.values())


# --------------------------------------------------------------------------- KServe


def test_inference_service_uses_the_runtime_and_storage_layout_kserve_expects():
    kinds = documents("kserve.yaml")
    model = kinds["InferenceService"]["spec"]["predictor"]["model"]
    runtime = kinds["ServingRuntime"]
    [container] = runtime["spec"]["containers"]
    env = {e["name"]: e["value"] for e in container.get("env", [])}

    assert kinds["InferenceService"]["apiVersion"] == "serving.kserve.io/v1beta1"
    assert model["runtime"] == runtime["metadata"]["name"] and model["protocolVersion"] == "v2"
    assert model["modelFormat"]["name"] in {f["name"] for f in runtime["spec"]["supportedModelFormats"]}
    assert model["storageUri"].split("://")[0] in {"s3", "gs", "pvc", "https", "hdfs", "oci"}
    # KServe copies storageUri to /mnt/models; the image's entrypoint takes only archives there,
    # its config is the one baked into the image (container/Containerfile copies it)
    assert "args" not in container and "command" not in container
    assert env["KOR_NER_CONFIG"] == "/home/model-server/config/kserve-config.properties"
    assert "config/k8s/kserve-config.properties" in (paths.ROOT / "container" / "Containerfile").read_text()
    assert env["KOR_NER_MODEL_STORE"] == "/mnt/models/model-store"
    assert "TS_SERVICE_ENVELOPE" not in env and "PROTOCOL_VERSION" not in env
    assert model["securityContext"]["runAsNonRoot"] is True
    model_config = yaml.safe_load((paths.CONFIG_DIR / "model-config.yaml").read_text(encoding="utf-8"))
    check_resources(model["resources"], workers=model_config["minWorkers"])


def test_kserve_config_properties_fit_the_runtime():
    props = tsctl.read_properties(K8S / "kserve-config.properties")
    runtime = documents("kserve.yaml")["ServingRuntime"]
    [container] = runtime["spec"]["containers"]

    # KServe sends clients to the container port; TorchServe answers the v2 route itself there
    assert props["inference_address"] == f"http://0.0.0.0:{container['ports'][0]['containerPort']}"
    assert props["management_address"].startswith("http://127.0.0.1:")  # never off the pod
    assert port(props["metrics_address"]) == int(runtime["spec"]["annotations"]["prometheus.kserve.io/port"])
    assert props["enable_envvars_config"] == "false" and "service_envelope" not in props
    assert props["disable_token_authorization"] == "true"
    assert props["model_store"] == "/mnt/models/model-store" and props["load_models"] == f"{MODEL}.mar"
    assert props["metrics_config"] == "/home/model-server/config/metrics.yaml"  # baked into the image too
    assert not any(v.startswith("/mnt/models/config") for v in props.values())  # nothing from the bucket but .mar


@pytest.mark.parametrize("name", ["pod-config.properties", "kserve-config.properties"])
def test_pod_configs_keep_the_local_limits(name):
    """Request and response limits, queue, timeout and metrics as in config/config.properties."""
    local = tsctl.read_properties(paths.CONFIG_DIR / "config.properties")
    pod = tsctl.read_properties(K8S / name)
    keys = (
        "max_request_size",
        "max_response_size",
        "job_queue_size",
        "default_response_timeout",
        "metrics_mode",
        "allowed_urls",
    )
    assert {k: pod.get(k) for k in keys} == {k: local[k] for k in keys}


# --------------------------------------------------------------------------- metrics config


def test_every_handler_metric_is_declared_for_prometheus():
    """TorchServe drops an undeclared handler metric without a word: each ner_* name the handler
    emits is in config/metrics.yaml, with TorchServe's ModelName and Level dimensions last."""
    emitted = set(re.findall(r'"(ner_[a-z_]+)"', (paths.HANDLER_DIR / "ner_handler.py").read_text(encoding="utf-8")))
    declared = yaml.safe_load((paths.CONFIG_DIR / "metrics.yaml").read_text(encoding="utf-8"))["model_metrics"]
    dims = {m["name"]: m["dimensions"] for kind in declared.values() for m in kind}
    assert len(emitted) == 9 and emitted <= set(dims), sorted(emitted - set(dims))
    assert all(dims[name][-2:] == ["ModelName", "Level"] for name in emitted)


# --------------------------------------------------------------------------- the key, the hardening, the network


def deployment_pod() -> tuple[dict, dict]:
    spec = documents("deployment.yaml")["Deployment"]["spec"]["template"]["spec"]
    return spec, spec["containers"][0]


def kserve_pod() -> tuple[dict, dict]:
    """The predictor pod as KServe makes it: the ServingRuntime's container (env, mounts) merged
    with the InferenceService's model spec (resources, securityContext), the pod-level fields
    of the predictor and the runtime's volumes."""
    kinds = documents("kserve.yaml")
    runtime = kinds["ServingRuntime"]["spec"]
    predictor = kinds["InferenceService"]["spec"]["predictor"]
    [container] = runtime["containers"]
    merged = {**container, **{k: v for k, v in predictor["model"].items() if k in ("resources", "securityContext")}}
    pod = {**{k: v for k, v in predictor.items() if k != "model"}, "volumes": runtime.get("volumes", [])}
    return pod, merged


PODS = {"deployment": deployment_pod, "kserve": kserve_pod}
CONFIGS = {"deployment": "pod-config.properties", "kserve": "kserve-config.properties"}
KEY_FILE_ENV = "KOR_NER_KEY_FILE"


@pytest.mark.parametrize("layout", PODS)
def test_the_inference_key_comes_from_a_secret_the_front_door_reads(layout):
    """The entrypoint's front door reads the key from KOR_NER_KEY_FILE: a file of a mounted
    Secret volume. No key value is in the manifests (no Secret object, no literal env value)."""
    pod, container = PODS[layout]()
    env = {e["name"]: e for e in container["env"]}
    key_path = env[KEY_FILE_ENV]["value"]
    mounts = {m["name"]: m for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    [(name, mount)] = [(n, m) for n, m in mounts.items() if key_path.startswith(m["mountPath"] + "/")]
    assert mount["readOnly"] is True
    secret = volumes[name]["secret"]
    assert secret["secretName"] == "kor-ner-inference-key" and not secret.get("optional", False)
    assert key_path.rsplit("/", 1)[1] == "key"  # the --from-literal=key=... of the kubectl line in the header
    assert secret["defaultMode"] & 0o007 == 0  # not world-readable
    name = "deployment.yaml" if layout == "deployment" else "kserve.yaml"
    text = (K8S / name).read_text(encoding="utf-8")
    assert "kind: Secret" not in text and "secretName: kor-ner-inference-key" in text
    assert "kubectl -n kor-ner create secret generic kor-ner-inference-key --from-literal=key=" in text
    assert all("valueFrom" in e or e["name"] != KEY_FILE_ENV or e["value"].startswith("/") for e in container["env"])


@pytest.mark.parametrize("layout", PODS)
def test_both_pods_are_hardened_alike(layout):
    pod, container = PODS[layout]()
    assert pod["automountServiceAccountToken"] is False
    assert pod["enableServiceLinks"] is False  # no Service variables in the entrypoint's KOR_NER_* prefix
    security = pod["securityContext"]
    assert security["runAsNonRoot"] is True
    assert security["runAsUser"] == security["runAsGroup"] == security["fsGroup"] == IMAGE_UID >= 10000
    assert container["securityContext"].get("runAsUser", IMAGE_UID) == IMAGE_UID
    assert containerfile()["user"] == f"{IMAGE_UID}:{IMAGE_UID}"  # the image names its user by number: the same one
    assert security["seccompProfile"] == {"type": "RuntimeDefault"}
    own = container["securityContext"]
    assert own["allowPrivilegeEscalation"] is False and own["readOnlyRootFilesystem"] is True
    assert own["capabilities"]["drop"] == ["ALL"]
    # the entrypoint writes its configs, the generated files and TorchServe's temp files under /tmp
    [scratch] = [m for m in container["volumeMounts"] if m["mountPath"] == "/tmp"]
    assert "emptyDir" in {v["name"]: v for v in pod["volumes"]}[scratch["name"]]


@pytest.mark.parametrize(
    "layout, selector",
    [
        ("deployment", lambda kinds: kinds["Deployment"]["spec"]["template"]["metadata"]["labels"]),
        ("kserve", lambda kinds: {"serving.kserve.io/inferenceservice": kinds["InferenceService"]["metadata"]["name"]}),
    ],
)
def test_each_way_of_deploying_has_a_network_policy_that_admits_only_inference_and_metrics(layout, selector):
    name = "deployment.yaml" if layout == "deployment" else "kserve.yaml"
    kinds = documents(name)
    policy = kinds["NetworkPolicy"]
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    spec = policy["spec"]
    assert spec["podSelector"]["matchLabels"] == selector(kinds)
    assert "Ingress" in spec["policyTypes"]
    rules = {p["port"]: rule["from"] for rule in spec["ingress"] for p in rule["ports"]}
    props = tsctl.read_properties(
        K8S / ("pod-config.properties" if layout == "deployment" else "kserve-config.properties")
    )
    assert set(rules) == {port(props["inference_address"]), port(props["metrics_address"])}  # the front door's two
    assert all(src for src in rules.values())  # each port from named peers only, never from anywhere
    assert "Egress" in spec["policyTypes"]
    if layout == "deployment":
        assert spec["egress"] == []  # the pod opens no connection


@pytest.mark.parametrize("name", ["pod-config.properties", "kserve-config.properties"])
def test_the_pod_configs_pass_the_entrypoints_checks(name):
    """What the front door needs from the config: the entrypoint accepts it (management and gRPC
    on loopback), binds inference and metrics on the pod's interfaces."""

    binds, derived = front_door.split_config((K8S / name).read_text(encoding="utf-8"), 8085, 8086)
    assert binds == {"inference": "0.0.0.0:8080", "metrics": "0.0.0.0:8082"}
    assert "disable_token_authorization=true" in derived


def test_the_per_source_limit_the_deployment_sets_is_the_one_the_front_door_test_holds():
    from tests.integration.test_front_door import PER_SOURCE

    _, container = deployment_pod()
    env = {e["name"]: e["value"] for e in container["env"]}
    assert int(env["KOR_NER_MAX_CONN_PER_SOURCE"]) == PER_SOURCE


# --------------------------------------------------------------------------- surviving the cluster


def pod_labels(layout: str) -> dict[str, str]:
    """The labels that select the layout's serving pods."""
    if layout == "deployment":
        return documents("deployment.yaml")["Deployment"]["spec"]["template"]["metadata"]["labels"]
    return {"serving.kserve.io/inferenceservice": documents("kserve.yaml")["InferenceService"]["metadata"]["name"]}


FILES = {"deployment": "deployment.yaml", "kserve": "kserve.yaml"}


@pytest.mark.parametrize("layout", PODS)
def test_two_replicas_at_least_one_pod_down_at_a_time_and_rollouts_that_surge(layout):
    """No replicas field beside an HPA (an apply would reset the count), two replicas at least,
    a PodDisruptionBudget of one, a rolling update that starts the new pod before it stops an
    old one."""
    kinds = documents(FILES[layout])
    if layout == "deployment":
        spec = kinds["Deployment"]["spec"]
        assert "replicas" not in spec
        assert kinds["HorizontalPodAutoscaler"]["spec"]["minReplicas"] >= 2
        strategy = spec["strategy"]
    else:
        predictor = kinds["InferenceService"]["spec"]["predictor"]
        assert predictor["minReplicas"] >= 2 and predictor["maxReplicas"] >= predictor["minReplicas"]
        strategy = predictor["deploymentStrategy"]
    assert strategy == {"type": "RollingUpdate", "rollingUpdate": {"maxSurge": 1, "maxUnavailable": 0}}
    budget = kinds["PodDisruptionBudget"]
    kubernetes_validate.validate(budget, KUBERNETES_VERSION, strict=True)
    assert budget["spec"] == {"maxUnavailable": 1, "selector": {"matchLabels": pod_labels(layout)}}


@pytest.mark.parametrize("layout", PODS)
def test_replicas_spread_over_nodes_and_zones(layout):
    pod, _ = PODS[layout]()
    spread = {c["topologyKey"]: c for c in pod["topologySpreadConstraints"]}
    assert set(spread) == {"kubernetes.io/hostname", "topology.kubernetes.io/zone"}
    for constraint in spread.values():
        assert constraint["maxSkew"] == 1 and constraint["labelSelector"] == {"matchLabels": pod_labels(layout)}
        assert constraint["matchLabelKeys"] == ["pod-template-hash"]  # a rollout's new pods spread among themselves
    # one per node; a cordoned node counts as no domain, else a drain could never place the pod elsewhere
    host = spread["kubernetes.io/hostname"]
    assert host["whenUnsatisfiable"] == "DoNotSchedule" and host["nodeTaintsPolicy"] == "Honor"
    zone = spread["topology.kubernetes.io/zone"]
    assert zone["whenUnsatisfiable"] == "ScheduleAnyway"  # a one-zone cluster still runs


@pytest.mark.parametrize(
    "layout, annotations",
    [
        ("deployment", lambda kinds: kinds["Deployment"]["spec"]["template"]["metadata"]["annotations"]),
        ("kserve", lambda kinds: kinds["InferenceService"]["spec"]["predictor"]["annotations"]),
    ],
)
def test_a_changed_config_rolls_the_pods(layout, annotations):
    """The pods carry the sha256 of the config they run (the manifest's header says how to
    recompute it): a config edited without it fails here, and a new value rolls the pods."""
    files = (K8S / CONFIGS[layout], paths.CONFIG_DIR / "metrics.yaml")
    digest = hashlib.sha256(b"".join(f.read_bytes() for f in files)).hexdigest()
    assert annotations(documents(FILES[layout]))["kor-ner/config-sha256"] == digest, (
        f"update kor-ner/config-sha256 in config/k8s/{FILES[layout]} to {digest}"
    )
    assert f"cat config/k8s/{CONFIGS[layout]} config/metrics.yaml | sha256sum" in (K8S / FILES[layout]).read_text()


@pytest.mark.parametrize("layout", PODS)
def test_every_object_in_one_namespace_and_storage_bounded(layout):
    """All objects in the namespace the kubectl lines of the header create things in; the pod's
    ephemeral storage holds its scratch volume."""
    text = (K8S / FILES[layout]).read_text(encoding="utf-8")
    namespaces = {d["metadata"].get("namespace") for d in documents(FILES[layout]).values()}
    assert namespaces == {"kor-ner"} and "kubectl create namespace kor-ner" in text
    assert all(
        " -n kor-ner " in line
        for line in text.splitlines()
        if "kubectl" in line and " create " in line and "create namespace" not in line
    )
    pod, container = PODS[layout]()
    [scratch] = [v for v in pod["volumes"] if "emptyDir" in v]
    storage = container["resources"]["limits"]["ephemeral-storage"]
    assert megabytes(storage) > megabytes(scratch["emptyDir"]["sizeLimit"])


METADATA = ipaddress.ip_address("169.254.169.254")  # the cloud metadata address


def test_the_predictor_reaches_only_dns_and_the_storage_endpoint():
    """KServe's pod runs the storage initializer, which downloads storageUri: egress to the
    cluster's DNS (53) and HTTPS (443) to the listed addresses only; no rule open to every
    destination, and none that reaches the cloud metadata address."""
    policy = documents("kserve.yaml")["NetworkPolicy"]
    kubernetes_validate.validate(policy, KUBERNETES_VERSION, strict=True)
    rules = policy["spec"]["egress"]
    assert rules and all(rule.get("to") and rule.get("ports") for rule in rules)  # no "anywhere", no "any port"
    ports = {(p["port"], p["protocol"]) for rule in rules for p in rule["ports"]}
    assert ports == {(53, "UDP"), (53, "TCP"), (443, "TCP")}
    for rule in rules:
        ports = {p["port"] for p in rule["ports"]}
        for peer in rule["to"]:
            if "ipBlock" in peer:
                block = peer["ipBlock"]
                excepted = any(METADATA in ipaddress.ip_network(e) for e in block.get("except", []))
                assert excepted or METADATA not in ipaddress.ip_network(block["cidr"]), block
                assert ports == {443}
            else:  # DNS: the cluster's resolver pods only
                assert ports == {53}
                assert peer["podSelector"] == {"matchLabels": {"k8s-app": "kube-dns"}}
                assert peer["namespaceSelector"] == {"matchLabels": {"kubernetes.io/metadata.name": "kube-system"}}


def merged_by_name(base: list[dict], patch: list[dict]) -> list[dict]:
    """A strategic merge of two lists keyed by ``name`` (containers, env, volumes, volumeMounts):
    patch items replace or extend the base's items of the same name, new ones are appended."""
    items = {item["name"]: item for item in base}
    for item in patch:
        items[item["name"]] = {**items.get(item["name"], {}), **item}
    return list(items.values())


def test_the_tls_patch_turns_the_door_to_https_with_a_tls_secret():
    """config/k8s/deployment-tls.patch.yaml, applied as kubectl applies a strategic-merge patch:
    the Deployment still passes the schemas, mounts a kubernetes.io/tls Secret's two files read-only
    and names them in the variables the entrypoint reads; the probes stay on the plain health door."""
    deployment = documents("deployment.yaml")["Deployment"]
    patch = yaml.safe_load((K8S / "deployment-tls.patch.yaml").read_text(encoding="utf-8"))["spec"]["template"]["spec"]
    pod = deployment["spec"]["template"]["spec"]
    [patched] = patch["containers"]
    [container] = pod["containers"]
    assert patched["name"] == container["name"]
    container["env"] = merged_by_name(container["env"], patched["env"])
    container["volumeMounts"] = merged_by_name(container["volumeMounts"], patched["volumeMounts"])
    pod["volumes"] = merged_by_name(pod["volumes"], patch["volumes"])
    kubernetes_validate.validate(deployment, KUBERNETES_VERSION, strict=True)

    env = {e["name"]: e.get("value") for e in container["env"]}
    entry = (paths.ROOT / "container" / "entrypoint.py").read_text(encoding="utf-8")
    assert {"KOR_NER_TLS_CERT", "KOR_NER_TLS_KEY"} <= env.keys()
    assert all(f'os.environ.get("{name}"' in entry for name in ("KOR_NER_TLS_CERT", "KOR_NER_TLS_KEY"))
    [mount] = [m for m in container["volumeMounts"] if m["name"] == "tls"]
    assert mount["readOnly"] is True
    # a kubernetes.io/tls Secret holds tls.crt and tls.key
    assert env["KOR_NER_TLS_CERT"] == f"{mount['mountPath']}/tls.crt"
    assert env["KOR_NER_TLS_KEY"] == f"{mount['mountPath']}/tls.key"
    [volume] = [v for v in pod["volumes"] if v["name"] == "tls"]
    assert volume["secret"]["secretName"] == "kor-ner-tls" and not volume["secret"].get("optional")
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"]["port"] == "health" and "scheme" not in container[probe]["httpGet"]
