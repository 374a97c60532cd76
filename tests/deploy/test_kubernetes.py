"""deploy/kubernetes checked offline: every built-in kind against the Kubernetes API schemas
(kubernetes-validate, strict), the KEDA ScaledObject against the fields of KEDA's CRD and the
redis-streams scaler, the kustomizations' file lists, and the manifests against the code: real
commands and options, real settings, real health-check roles, the stream and group the workers
use, ports and selectors that meet. The Redis Cluster overlay is built here (a small Python
build of the patches these kustomizations use): its triggers watch the shard streams the code
names, and every role gets the shards. `kubectl kustomize` builds them too where kubectl is
installed (skipped otherwise), and must agree with the Python build."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path

import kubernetes_validate
import pytest
import typer
import yaml
from pydantic import BaseModel
from typer.testing import CliRunner

from fer_pipeline.cli import app
from fer_pipeline.consumers.display import DisplayService
from fer_pipeline.consumers.label_logger import LabelLoggerService
from fer_pipeline.consumers.sinks.mqtt import MqttSink
from fer_pipeline.consumers.sinks.webhook import WebhookSink
from fer_pipeline.producers.camera import ProducerService
from fer_pipeline.retention import RetentionService
from fer_pipeline.settings import RedisSettings, Settings
from fer_pipeline.streams import WORKERS_GROUP, StreamKeys
from fer_pipeline.workers.inference import InferenceWorker

REPO = Path(__file__).resolve().parents[2]
DEPLOY = REPO / "deploy" / "kubernetes"
# The oldest Kubernetes release still commonly run and the newest the package bundles.
K8S_VERSIONS = ("1.30.0", kubernetes_validate.latest_version())
IMAGE = "fer-pipeline"
# The heartbeat role of each command a container runs (what `healthcheck --role` looks for).
ROLE_OF = {"producer": ProducerService.role, "worker": InferenceWorker.role, "logger": LabelLoggerService.role,
           "display": DisplayService.role, "retention": RetentionService.role, "sink mqtt": MqttSink.role,
           "sink webhook": WebhookSink.role}
# Stand-ins for the Secrets' keys, which the user creates (never in the repository).
SECRET_SAMPLES = {("fer-redis", "address"): "redis.fer.svc.cluster.local:6379", ("fer-redis", "password"): "0123abcd",
                  ("fer-logger", "db"): "postgresql://fer:pw@db.example/fer", ("fer-dashboard", "token"): "t0ken",
                  ("fer-sink-mqtt", "url"): "mqtt://user:pw@broker.example:1883"}
# The ScaledObjectSpec's fields in KEDA's CRD (keda.sh_scaledobjects.yaml, v2.x) and the
# redis-streams scaler's metadata (https://keda.sh/docs/latest/scalers/redis-streams/).
KEDA_SPEC_FIELDS = {"scaleTargetRef", "pollingInterval", "cooldownPeriod", "initialCooldownPeriod", "idleReplicaCount",
                    "minReplicaCount", "maxReplicaCount", "fallback", "advanced", "triggers"}
KEDA_TARGET_FIELDS = {"apiVersion", "kind", "name", "envSourceContainerName"}
KEDA_TRIGGER_FIELDS = {"type", "name", "metadata", "authenticationRef", "metricType", "useCachedMetrics"}
REDIS_STREAMS_METADATA = {"address", "host", "port", "addressFromEnv", "hostFromEnv", "portFromEnv", "usernameFromEnv",
                          "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount", "streamLength",
                          "lagCount", "activationLagCount", "enableTLS", "unsafeSsl", "databaseIndex"}
# The redis-cluster-streams scaler's metadata (https://keda.sh/docs/latest/scalers/redis-cluster-streams/).
REDIS_CLUSTER_STREAMS_METADATA = {"addresses", "hosts", "ports", "addressesFromEnv", "hostsFromEnv", "portsFromEnv",
                                  "usernameFromEnv", "passwordFromEnv", "stream", "consumerGroup", "pendingEntriesCount",
                                  "streamLength", "lagCount", "activationLagCount", "enableTLS", "unsafeSsl"}
CLUSTER_OVERLAY = DEPLOY / "overlays" / "redis-cluster"
runner = CliRunner()


# -- loading -------------------------------------------------------------------------------------
def _kustomizations() -> list[Path]:
    return sorted(DEPLOY.rglob("kustomization.yaml"))


def _load(path: Path) -> list[dict]:
    return [d for d in yaml.safe_load_all(path.read_text()) if d is not None]


def _manifests() -> list[dict]:
    """Every object of the base and the components (the overlays only patch them)."""
    out = []
    for k in _kustomizations():
        spec = yaml.safe_load(k.read_text())
        for entry in spec.get("resources", []):
            if (k.parent / entry).is_file():
                out += _load(k.parent / entry)
    return out


def _of_kind(kind: str) -> list[dict]:
    return [d for d in _manifests() if d["kind"] == kind]


def _config_map(name: str) -> dict[str, str]:
    (cm,) = [d for d in _of_kind("ConfigMap") if d["metadata"]["name"] == name]
    return cm["data"]


def _pods() -> list[tuple[str, dict]]:
    """(Deployment name, pod template spec) of every Deployment."""
    return [(d["metadata"]["name"], d["spec"]["template"]["spec"]) for d in _of_kind("Deployment")]


def _ours() -> list[tuple[str, dict]]:
    """(Deployment name, container) of every container running the fer-pipeline image."""
    return [(name, c) for name, pod in _pods() for c in pod["containers"] if c["image"].split(":")[0] == IMAGE]


def _expand(value: str, env: dict[str, str]) -> str:
    """$(VAR) references replaced as the kubelet does (an unknown one is left as written)."""
    return re.sub(r"\$\((\w+)\)", lambda m: env.get(m[1], m[0]), value)


def _environment(container: dict, config_map=_config_map) -> dict[str, str]:
    """The container's environment as the kubelet builds it: envFrom ConfigMaps first, then env
    in order with $(VAR) expanded from what is defined so far; Secrets take the stand-ins.
    ``config_map``: a ConfigMap's data by name (the base's, or those of a build)."""
    env: dict[str, str] = {}
    for src in container.get("envFrom", []):
        env |= config_map(src["configMapRef"]["name"])
    for var in container.get("env", []):
        if "value" in var:
            env[var["name"]] = _expand(var["value"], env)
        elif "secretKeyRef" in var["valueFrom"]:
            ref = var["valueFrom"]["secretKeyRef"]
            env[var["name"]] = SECRET_SAMPLES[ref["name"], ref["key"]]
        else:
            ref = var["valueFrom"]["configMapKeyRef"]
            env[var["name"]] = config_map(ref["name"])[ref["key"]]
    return env


def _command(args: list[str]) -> tuple[str, list[str]]:
    """The fer-pipeline command an argument list runs (``sink mqtt`` is two words), and the rest."""
    words = 2 if args[0] == "sink" else 1
    return " ".join(args[:words]), args[words:]


def _parse(command: str, args: list[str]) -> None:
    """Parse ``args`` with the real command, as the CLI would: unknown options or bad values fail."""
    cmd = typer.main.get_command(app)
    for word in command.split():
        cmd = cmd.commands[word]  # type: ignore[attr-defined]
    cmd.make_context(command, list(args))


def _build(where: Path, docs: list[dict] | None = None) -> list[dict]:
    """``kustomize build`` of ``where`` (onto ``docs``: a component's), for what these
    kustomizations use, so the overlays are checked where kubectl is missing (a test below
    compares the two where it is not): resources (files or folders), then components, then
    patches. Labels are left out (kustomize adds app.kubernetes.io/part-of to every object)."""
    spec = yaml.safe_load((where / "kustomization.yaml").read_text())
    docs = list(docs or [])
    for entry in spec.get("resources", []):
        docs += _build(where / entry) if (where / entry).is_dir() else _load(where / entry)
    for entry in spec.get("components", []):
        docs = _build(where / entry, docs)
    for patch in spec.get("patches", []):
        body = yaml.safe_load((where / patch["path"]).read_text() if "path" in patch else patch["patch"])
        if isinstance(body, list):  # JSON 6902, on its target
            (doc,) = [d for d in docs if _is_target(patch["target"], d)]
            for op in body:
                _json_patch(doc, op)
            continue
        # A strategic merge patch: on the object of its kind and name (kustomize fails on none too).
        (doc,) = [d for d in docs if (d["kind"], d["metadata"]["name"]) == (body["kind"], body["metadata"]["name"])]
        if body.get("$patch") == "delete":
            docs = [d for d in docs if d is not doc]
        else:
            _merge(doc, body)
    return docs


def _is_target(target: dict, doc: dict) -> bool:
    group, _, version = doc["apiVersion"].rpartition("/")
    found = {"group": group, "version": version, "kind": doc["kind"], "name": doc["metadata"]["name"]}
    return all(found[k] == v for k, v in target.items())


def _json_patch(doc: dict, op: dict) -> None:
    assert op["op"] == "replace", f"{op}: not reproduced here (kubectl builds it)"
    *parents, last = [p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]]
    node = doc
    for part in [*parents, last]:
        parent, node = node, node[int(part) if isinstance(node, list) else part]  # replace: the path exists
    parent[int(last) if isinstance(parent, list) else last] = op["value"]


def _merge(doc: dict, patch: dict) -> None:
    for key, value in patch.items():
        assert not isinstance(value, list), f"{key}: kustomize merges lists by key, not reproduced here"
        if isinstance(value, dict) and isinstance(doc.get(key), dict):
            _merge(doc[key], value)
        else:
            doc[key] = value


def _by_name(docs: list[dict]) -> dict[tuple[str, str], dict]:
    return {(d["kind"], d["metadata"]["name"]): d for d in docs}


def _keda_hpa(so: dict) -> dict:
    """The HPA KEDA makes of a ScaledObject: its behavior as given, one External metric per
    trigger, named as KEDA names them (s<index>-redis-streams-<stream, / . : % ( ) as ->)."""
    spec = so["spec"]
    ref = spec["scaleTargetRef"]
    metrics = []
    for i, trigger in enumerate(spec["triggers"]):
        meta = trigger["metadata"]
        name = f"s{i}-redis-streams-" + re.sub(r"[/.:%()]", "-", meta["stream"])
        metrics.append({"type": "External", "external": {
            "metric": {"name": name}, "target": {"type": "AverageValue", "averageValue": meta["lagCount"]}}})
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": {"name": "keda-hpa-worker"},
            "spec": {"scaleTargetRef": {"apiVersion": ref["apiVersion"], "kind": ref["kind"], "name": ref["name"]},
                     "minReplicas": spec["minReplicaCount"], "maxReplicas": spec["maxReplicaCount"],
                     "behavior": spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"], "metrics": metrics}}


# -- the kustomizations ------------------------------------------------------------------------
def test_every_kustomization_lists_exactly_the_files_beside_it():
    assert {k.parent.relative_to(DEPLOY).as_posix() for k in _kustomizations()} == {
        ".", "base", "components/display", "components/redis-cluster", "components/sink-mqtt",
        "overlays/external-redis", "overlays/redis-cluster"}
    for k in _kustomizations():
        spec = yaml.safe_load(k.read_text())
        listed = set()
        for entry in [*spec.get("resources", []), *spec.get("components", []),
                      *(p["path"] for p in spec.get("patches", []) if "path" in p)]:
            target = (k.parent / entry).resolve()
            assert target.is_file() or (target / "kustomization.yaml").is_file(), f"{k}: {entry} does not exist"
            listed.add(target)
        here = {p.resolve() for p in k.parent.glob("*.yaml")} - {k.resolve()}
        assert here <= listed, f"{k} leaves out {sorted(p.name for p in here - listed)}"
    assert yaml.safe_load((DEPLOY / "kustomization.yaml").read_text())["resources"] == ["base"]


def test_the_image_is_the_one_the_kustomization_names():
    (image,) = yaml.safe_load((DEPLOY / "base" / "kustomization.yaml").read_text())["images"]
    assert image["name"] == IMAGE
    assert {c["image"].split(":")[0] for _, pod in _pods() for c in pod["containers"]} == {IMAGE, "redis"}
    assert {c["image"] for _, pod in _pods() for c in pod["containers"] if c["image"].startswith("redis")} \
        == {"redis:7.4-alpine"}  # 7 or later: the workers' lag trigger reads XINFO GROUPS' lag


# -- the Kubernetes API schemas ----------------------------------------------------------------
@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_every_builtin_object_validates_strictly(version):
    docs = [d for d in _manifests() if "." not in d["apiVersion"].split("/")[0]]  # v1, apps/v1: not CRDs
    assert {d["kind"] for d in docs} == {"ConfigMap", "Deployment", "Service", "PersistentVolumeClaim"}
    for doc in docs:
        kubernetes_validate.validate(doc, version, strict=True)


def test_strict_validation_catches_a_misspelt_field():
    (worker,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == "worker"]
    worker["spec"]["template"]["spec"]["containers"][0]["livenesProbe"] = {}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(worker, K8S_VERSIONS[-1], strict=True)


def test_deployments_select_their_own_pods_and_services_reach_a_named_port():
    for d in _of_kind("Deployment"):
        labels = d["spec"]["template"]["metadata"]["labels"]
        assert d["spec"]["selector"]["matchLabels"].items() <= labels.items(), d["metadata"]["name"]
    for svc in _of_kind("Service"):
        selector = svc["spec"]["selector"].items()
        pods = [d for d in _of_kind("Deployment") if selector <= d["spec"]["template"]["metadata"]["labels"].items()]
        assert len(pods) == 1, svc["metadata"]["name"]
        ports = {p["name"]: p["containerPort"] for c in pods[0]["spec"]["template"]["spec"]["containers"]
                 for p in c.get("ports", [])}
        for port in svc["spec"]["ports"]:
            assert port["targetPort"] in ports and ports[port["targetPort"]] == port["port"]


def test_the_dashboard_listens_where_the_image_and_its_service_say():
    exposed = re.search(r"^EXPOSE (\d+)$", (REPO / "Dockerfile").read_text(), flags=re.M)
    assert exposed is not None
    ((_, dashboard),) = [(n, c) for n, c in _ours() if n == "dashboard"]
    s = Settings(**_settings_input(_environment(dashboard)))
    assert s.dashboard.port == int(exposed[1]) == dashboard["ports"][0]["containerPort"]
    assert s.dashboard.host == "0.0.0.0" and s.dashboard.token is not None


@pytest.mark.redis
def test_the_dashboard_probes_answer_without_the_token(redis_settings, real_transport):
    from fastapi.testclient import TestClient  # the dashboard extra

    from fer_pipeline.dashboard.app import create_app

    ((_, dashboard),) = [(n, c) for n, c in _ours() if n == "dashboard"]
    s = redis_settings.with_updates(dashboard={"token": "t0ken", "host": "0.0.0.0"})
    client = TestClient(create_app(s, real_transport))
    probes = [dashboard["readinessProbe"], dashboard["livenessProbe"]]
    assert {p["httpGet"]["path"] for p in probes} >= {"/healthz"}  # the one that asks Redis
    for probe in probes:
        assert probe["httpGet"]["port"] == "http"
        assert client.get(probe["httpGet"]["path"]).status_code == 200
    assert client.get("/api/cameras").status_code == 401  # the token still guards the data


# -- the code: commands, settings, roles -------------------------------------------------------
def test_every_container_runs_a_real_command_with_real_options():
    seen = set()
    for name, c in _ours():
        env = _environment(c)
        args = [_expand(a, env) for a in c["args"]]
        assert not [a for a in args if "$(" in a], name
        command, rest = _command(args)
        assert runner.invoke(app, [*command.split(), "--help"]).exit_code == 0, (name, command)
        _parse(command, rest)
        seen.add(command)
    assert seen == {"producer", "worker", "logger", "display", "retention", "dashboard", "sink mqtt"}


def test_settings_come_only_from_fer_variables_that_exist():
    for name, c in _ours():
        env = _environment(c)
        names = {k for k in env if k.startswith("FER_")}
        for var in names:
            section, _, field = var.removeprefix("FER_").lower().partition("__")
            if field:
                model = Settings.model_fields[section].annotation
                assert isinstance(model, type) and issubclass(model, BaseModel), (name, var)
                assert field in model.model_fields, (name, var)
            else:
                assert section in Settings.model_fields, (name, var)
        # ... and their values are valid settings (the Redis URL as the container assembles it).
        s = Settings(**_settings_input(env))
        assert s.redis.url == "redis://:0123abcd@redis.fer.svc.cluster.local:6379/0", name
        assert not [a for a in c["args"] if a.startswith("--") and a not in ("--source", "--camera-id")], \
            f"{name}: settings belong in FER_* variables, not arguments"


def _settings_input(env: dict[str, str]) -> dict:
    """The FER_* variables of ``env`` as Settings' nested input (what pydantic-settings reads)."""
    out: dict = {}
    for var, value in env.items():
        if var.startswith("FER_"):
            section, _, field = var.removeprefix("FER_").lower().partition("__")
            if field:
                out.setdefault(section, {})[field] = value
            else:
                out[section] = value
    return out


def test_probes_ask_for_the_heartbeat_of_the_role_the_container_runs():
    for name, c in _ours():
        command, _ = _command(c["args"])
        if command == "dashboard":
            continue  # HTTP probes, checked above
        for probe in ("startupProbe", "livenessProbe"):
            exec_ = c[probe]["exec"]["command"]
            assert exec_[:2] == ["fer-pipeline", "healthcheck"], (name, probe)
            _parse("healthcheck", exec_[2:])
            assert exec_[2:] == ["--role", ROLE_OF[command]], (name, probe)
            # A probe starts Python and asks Redis: about 0.7 s; a slow node must not kill the pod.
            assert c[probe]["timeoutSeconds"] >= 5
        # Restarted only after a minute or more without a heartbeat (it is rewritten every second).
        live = c["livenessProbe"]
        assert live["periodSeconds"] * live["failureThreshold"] >= 60


def test_secrets_stay_out_of_manifests_and_arguments():
    assert not _of_kind("Secret")
    secret_settings = {"FER_CONSUMER__DB", "FER_DASHBOARD__TOKEN", "FER_SINK__MQTT_URL", "REDIS_PASSWORD"}
    for name, pod in _pods():
        for c in pod["containers"]:
            for var in c.get("env", []):
                if var["name"] in secret_settings or var["name"] == "REDISCLI_AUTH":
                    assert "secretKeyRef" in var["valueFrom"], (name, var["name"])
                if var["name"] == "FER_REDIS__URL":
                    assert "$(REDIS_PASSWORD)" in var["value"], name  # assembled from the Secret
            assert not any("REDIS_PASSWORD" in a or "://" in a for a in [*c.get("args", []), *c.get("command", [])[:-1]])


def test_pods_run_unprivileged_with_read_only_roots_and_sized_resources():
    for name, pod in _pods():
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] > 0, name
        assert pod["automountServiceAccountToken"] is False, name
        mounts = {v["name"]: v for v in pod.get("volumes", [])}
        for c in pod["containers"]:
            sc = c["securityContext"]
            assert sc["allowPrivilegeEscalation"] is False and sc["readOnlyRootFilesystem"] is True, name
            assert sc["capabilities"]["drop"] == ["ALL"], name
            assert {"cpu", "memory"} <= c["resources"]["requests"].keys() and "memory" in c["resources"]["limits"]
            if c["image"].startswith(IMAGE):
                # The only writable paths: /tmp (scratch) and /data (the display's videos).
                paths = {m["mountPath"]: mounts[m["name"]] for m in c["volumeMounts"]}
                assert "emptyDir" in paths["/tmp"], name
                assert set(paths) <= {"/tmp", "/data"}, name


# -- KEDA --------------------------------------------------------------------------------------
def test_the_scaled_object_scales_the_workers_on_their_groups_lag():
    (so,) = _of_kind("ScaledObject")
    assert so["apiVersion"] == "keda.sh/v1alpha1"
    spec = so["spec"]
    # Required by KEDA's CRD: scaleTargetRef.name, and each trigger's type and metadata (strings).
    assert set(spec) <= KEDA_SPEC_FIELDS and {"scaleTargetRef", "triggers"} <= set(spec)
    assert set(spec["scaleTargetRef"]) <= KEDA_TARGET_FIELDS
    assert 1 <= spec["minReplicaCount"] <= spec["maxReplicaCount"]
    (worker,) = [d for d in _of_kind("Deployment") if d["metadata"]["name"] == spec["scaleTargetRef"]["name"]]
    assert spec["scaleTargetRef"]["kind"] == "Deployment" and spec["scaleTargetRef"]["apiVersion"] == "apps/v1"
    assert "replicas" not in worker["spec"], "KEDA owns the replica count; apply would reset it"
    (container,) = worker["spec"]["template"]["spec"]["containers"]
    assert container["name"] == spec["scaleTargetRef"]["envSourceContainerName"]
    assert _command(container["args"])[0] == "worker"

    (trigger,) = spec["triggers"]
    assert set(trigger) <= KEDA_TRIGGER_FIELDS and trigger["type"] == "redis-streams"
    meta = trigger["metadata"]
    assert set(meta) <= REDIS_STREAMS_METADATA and all(isinstance(v, str) for v in meta.values())
    # The stream and group the workers read, named by the code: a rename breaks this test.
    prefix = RedisSettings(prefix=_config_map("fer-config")["FER_REDIS__PREFIX"]).prefix
    assert meta["stream"] == StreamKeys(prefix).crops
    assert meta["consumerGroup"] == WORKERS_GROUP
    # Lag (Redis 7's XINFO GROUPS): KEDA refuses lagCount without activationLagCount.
    assert int(meta["lagCount"]) > 0 and int(meta["activationLagCount"]) >= 0
    assert "pendingEntriesCount" not in meta and "streamLength" not in meta
    assert meta["enableTLS"] in ("true", "false") and meta["databaseIndex"] == "0"
    # KEDA reads the address and password from the worker's own environment, which must hold
    # them, and the workers' Redis URL is built from the same two.
    env = _environment(container)
    address, password = env[meta["addressFromEnv"]], env[meta["passwordFromEnv"]]
    assert Settings(**_settings_input(env)).redis.url == f"redis://:{password}@{address}/{meta['databaseIndex']}"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_hpa_keda_makes_of_it_validates_strictly(version):
    """KEDA hands `advanced.horizontalPodAutoscalerConfig.behavior` to the HPA it creates as
    they are: the Kubernetes schema of that HPA checks them."""
    (so,) = _of_kind("ScaledObject")
    hpa = _keda_hpa(so)
    assert [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]] == ["s0-redis-streams-fer-crops"]
    kubernetes_validate.validate(hpa, version, strict=True)


def test_the_external_redis_overlay_patches_what_the_base_has():
    spec = yaml.safe_load((DEPLOY / "overlays" / "external-redis" / "kustomization.yaml").read_text())
    (json_patch,) = [p for p in spec["patches"] if "target" in p]
    (op,) = yaml.safe_load(json_patch["patch"])
    (so,) = _of_kind("ScaledObject")
    assert op["path"] == "/spec/triggers/0/metadata/enableTLS" and "enableTLS" in so["spec"]["triggers"][0]["metadata"]
    deleted = [yaml.safe_load(p["patch"]) for p in spec["patches"] if "target" not in p and "patch" in p]
    assert {(d["kind"], d["metadata"]["name"]) for d in deleted} == {("Deployment", "redis"), ("Service", "redis")}
    scheme = yaml.safe_load((DEPLOY / "overlays" / "external-redis" / "tls-config.yaml").read_text())
    assert scheme["data"] == {"REDIS_SCHEME": "rediss"}
    assert RedisSettings(url=f"{scheme['data']['REDIS_SCHEME']}://:pw@redis.example:6380/0").url


# -- Redis Cluster: sharded streams (components/redis-cluster, overlays/redis-cluster) -------
def test_every_role_of_the_cluster_overlay_reads_the_shards_from_a_cluster_node():
    built = _by_name(_build(CLUSTER_OVERLAY))
    assert ("Deployment", "redis") not in built and ("Service", "redis") not in built  # external-redis's doing
    config = built["ConfigMap", "fer-config"]["data"]
    assert config["FER_STREAMS__SHARDS"] == "3" and config["REDIS_SCHEME"] == "rediss"

    def config_map(name: str) -> dict[str, str]:
        return built["ConfigMap", name]["data"]

    seen = set()
    for (kind, name), d in built.items():
        for c in d["spec"]["template"]["spec"]["containers"] if kind == "Deployment" else []:
            s = Settings(**_settings_input(_environment(c, config_map)))
            assert s.streams.shards == 3, name
            # Any node's address: the cluster client finds the others (database 0, a cluster's only one).
            assert s.redis.url == f"rediss://:0123abcd@{SECRET_SAMPLES['fer-redis', 'address']}/0", name
            command = _command(c["args"])[0]
            if command == "worker":
                assert s.worker.shards == [], "every worker serves every shard: the triggers assume it"
            seen.add(command)
    assert seen == {"producer", "worker", "logger", "retention", "dashboard"}
    # The optional roles (components/display, sink-mqtt) take the shards the same way.
    for name, c in _ours():
        assert {"configMapRef": {"name": "fer-config"}} in c["envFrom"], name
        assert "FER_STREAMS__SHARDS" not in {v["name"] for v in c.get("env", [])}, name


def test_the_cluster_triggers_watch_the_workers_group_on_every_crops_shard():
    built = _by_name(_build(CLUSTER_OVERLAY))
    so, config = built["ScaledObject", "worker"], built["ConfigMap", "fer-config"]["data"]
    (base,) = _of_kind("ScaledObject")
    assert {k: v for k, v in so["spec"].items() if k != "triggers"} == \
        {k: v for k, v in base["spec"].items() if k != "triggers"}
    # The hash-tagged names only the code computes: a change to shard_tag or the key layout, a
    # prefix or shard count changed in one place only, breaks this test.
    prefix = RedisSettings(prefix=config["FER_REDIS__PREFIX"]).prefix
    keys = StreamKeys(prefix, int(config["FER_STREAMS__SHARDS"]), tagged=True)
    triggers = so["spec"]["triggers"]
    assert [t["metadata"]["stream"] for t in triggers] == list(keys.crops_shards)
    assert keys.crops_shards == StreamKeys("fer", 3, tagged=True).crops_shards  # as shipped

    (worker,) = built["Deployment", "worker"]["spec"]["template"]["spec"]["containers"]
    env = _environment(worker, lambda name: built["ConfigMap", name]["data"])
    base_lag = int(base["spec"]["triggers"][0]["metadata"]["lagCount"])
    for trigger in triggers:
        assert set(trigger) <= KEDA_TRIGGER_FIELDS and trigger["type"] == "redis-cluster-streams"
        meta = trigger["metadata"]
        assert set(meta) <= REDIS_CLUSTER_STREAMS_METADATA and all(isinstance(v, str) for v in meta.values())
        assert meta["consumerGroup"] == WORKERS_GROUP
        # The HPA follows the busiest shard: the per-worker target split over the shards.
        assert int(meta["lagCount"]) == base_lag // keys.shards and int(meta["activationLagCount"]) >= 0
        assert "pendingEntriesCount" not in meta and "streamLength" not in meta
        assert meta["enableTLS"] == {"rediss": "true", "redis": "false"}[config["REDIS_SCHEME"]]
        # KEDA reaches the node the workers' URL names, with their password.
        address, password = env[meta["addressesFromEnv"]], env[meta["passwordFromEnv"]]
        assert Settings(**_settings_input(env)).redis.url == f"rediss://:{password}@{address}/0"


@pytest.mark.parametrize("version", K8S_VERSIONS)
def test_the_cluster_overlay_and_its_hpa_validate_strictly(version):
    built = _build(CLUSTER_OVERLAY)
    for doc in built:
        if "." not in doc["apiVersion"].split("/")[0]:
            kubernetes_validate.validate(doc, version, strict=True)
    (so,) = [d for d in built if d["kind"] == "ScaledObject"]
    hpa = _keda_hpa(so)
    kubernetes_validate.validate(hpa, version, strict=True)
    # The API server also wants each metric name to be a path segment (no / or %, not . or ..):
    # the hash tags' braces are allowed, and the names differ by KEDA's index.
    names = [m["external"]["metric"]["name"] for m in hpa["spec"]["metrics"]]
    assert len(set(names)) == len(names) == len(so["spec"]["triggers"])
    assert all(not re.search(r"[/%]", n) and n not in (".", "..") for n in names), names


# -- kustomize itself, where installed ---------------------------------------------------------
def test_kustomize_builds_the_base_the_overlay_and_the_components(tmp_path):
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its kustomize builds the manifests offline)")
    overlay = tmp_path / "all"
    overlay.mkdir()
    rel = os.path.relpath(DEPLOY, overlay)
    (overlay / "kustomization.yaml").write_text(yaml.safe_dump({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization", "namespace": "fer",
        "resources": [f"{rel}/base"],
        "components": [f"{rel}/components/display", f"{rel}/components/sink-mqtt"]}))
    built = {}
    for name, where in [("base", DEPLOY), ("external", DEPLOY / "overlays" / "external-redis"), ("all", overlay)]:
        r = subprocess.run([kubectl, "kustomize", str(where)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        built[name] = {(d["kind"], d["metadata"]["name"]): d for d in yaml.safe_load_all(r.stdout)}
    assert ("Deployment", "redis") in built["base"] and ("Deployment", "redis") not in built["external"]
    assert built["external"][("ConfigMap", "fer-config")]["data"]["REDIS_SCHEME"] == "rediss"
    assert {("Deployment", "display"), ("Deployment", "sink-mqtt")} <= built["all"].keys()
    assert {d["metadata"]["namespace"] for d in built["all"].values()} == {"fer"}
    assert all(d["metadata"]["labels"]["app.kubernetes.io/part-of"] == "fer-pipeline" for d in built["all"].values())


def test_kustomize_builds_the_overlays_as_the_tests_do():
    """The Python build above, which the cluster tests use, against kustomize's own."""
    kubectl = shutil.which("kubectl")
    if kubectl is None:
        pytest.skip("kubectl is not installed (its kustomize builds the manifests offline)")
    for where in (DEPLOY, DEPLOY / "overlays" / "external-redis", CLUSTER_OVERLAY):
        r = subprocess.run([kubectl, "kustomize", str(where)], capture_output=True, text=True, timeout=120)
        assert r.returncode == 0, r.stderr
        built = _by_name(list(yaml.safe_load_all(r.stdout)))
        for d in built.values():
            assert d["metadata"]["labels"].pop("app.kubernetes.io/part-of") == "fer-pipeline"
            if not d["metadata"]["labels"]:
                del d["metadata"]["labels"]
        assert built == _by_name(_build(where)), where
