#!/usr/bin/env python3
"""Renders every overlay of deploy/kubernetes with `kubectl kustomize`, validates every object
against the Kubernetes 1.30 and latest schemas (kubernetes-validate, strict) and checks the invariants the
manifests exist for: the drain runs before a pod stops, every Deployment has probes and a
PodDisruptionBudget, the autoscalers' metrics exist in the edge's and broker's /metrics, the
ports are the ones configs.tmpl/ listens on, the ConfigMaps are configs.tmpl/ itself, pods run
unprivileged, and the NetworkPolicies allow exactly the links the architecture has.

    python3 deploy/kubernetes/test_manifests.py

Needs kubectl (with kustomize), PyYAML and kubernetes-validate; prints one line per check and a
closing `test result: kubernetes. N passed; M failed`; exits 1 on any failure.
"""

import pathlib
import re
import subprocess
import sys
import tomllib

import kubernetes_validate
import yaml

ROOT = pathlib.Path(__file__).resolve().parents[2]
HERE = ROOT / "deploy" / "kubernetes"
OVERLAYS = ["dev", "production"]
# The oldest release the manifests support, and the newest the validator knows.
KUBERNETES = ["1.30.0", kubernetes_validate.latest_version()]
ROLES = {"edge": "edge", "broker": "broker", "game-demo": "game-demo"}


def render(overlay):
    out = subprocess.run(
        ["kubectl", "kustomize", "--load-restrictor", "LoadRestrictionsNone",
         str(HERE / "overlays" / overlay)],
        check=True, capture_output=True, text=True,
    ).stdout
    return [doc for doc in yaml.safe_load_all(out) if doc]


def template(name):
    return tomllib.loads((ROOT / "configs.tmpl" / name).read_text())


def port(listen):
    return int(listen.rsplit(":", 1)[1])


def of_kind(docs, kind):
    return {d["metadata"]["name"]: d for d in docs if d["kind"] == kind}


def container(deployment):
    [c] = deployment["spec"]["template"]["spec"]["containers"]
    return c


def metric_names():
    """Every metric name the edge and the broker register (what their /metrics print)."""
    names = set()
    for source in ["edge/src/metrics.rs", "broker/src/metrics.rs"]:
        names |= set(re.findall(r'"(janus_[a-z0-9_]+)"', (ROOT / source).read_text()))
    return names


def checks(overlay, docs):
    deployments = of_kind(docs, "Deployment")
    edge, broker, game = (deployments[n] for n in ROLES)
    edge_cfg, broker_cfg, game_cfg = (template(f"{n}.toml") for n in ROLES)

    def validated():
        for version in KUBERNETES:
            for doc in docs:
                kubernetes_validate.validate(doc, version, strict=True)

    def drain_before_stop():
        spec = edge["spec"]["template"]["spec"]
        pre_stop = container(edge)["lifecycle"]["preStop"]["exec"]["command"]
        assert pre_stop[0] == "sleep", pre_stop
        needed = int(pre_stop[1]) + edge_cfg["drain_grace_secs"]
        grace = spec["terminationGracePeriodSeconds"]
        assert grace > needed, f"grace {grace} s <= preStop + drain_grace_secs {needed} s"
        assert "--config" in container(edge)["args"], "the edge reads the template (drain)"
        rolling = edge["spec"]["strategy"]["rollingUpdate"]
        assert rolling["maxUnavailable"] == 0 and rolling["maxSurge"] >= 1, rolling

    def probes_and_budgets():
        budgets = of_kind(docs, "PodDisruptionBudget").values()
        for name, deployment in deployments.items():
            c = container(deployment)
            assert "readinessProbe" in c and "livenessProbe" in c, name
            labels = deployment["spec"]["template"]["metadata"]["labels"]
            assert any(
                set(b["spec"]["selector"]["matchLabels"].items()) <= set(labels.items())
                for b in budgets
            ), f"no PodDisruptionBudget selects {name}"
        for name in ["edge", "broker"]:
            c = container(deployments[name])
            assert c["readinessProbe"]["httpGet"]["path"] == "/ready", name
            assert c["livenessProbe"]["httpGet"]["path"] == "/health", name

    def autoscaler_metrics_exist():
        known = metric_names()
        hpas = of_kind(docs, "HorizontalPodAutoscaler")
        assert set(hpas) == {"edge", "broker"}, set(hpas)
        for hpa in hpas.values():
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    name = metric["pods"]["metric"]["name"]
                    assert name in known, f"{name} is not a metric of the edge or broker"
        rules = of_kind(docs, "ConfigMap")["janus-prometheus-adapter-rules"]
        exposed = yaml.safe_load(rules["data"]["config.yaml"])["rules"]
        exposed = {r["name"]["as"] for r in exposed}
        for hpa in hpas.values():
            for metric in hpa["spec"]["metrics"]:
                if metric["type"] == "Pods":
                    assert metric["pods"]["metric"]["name"] in exposed, "adapter rule missing"

    def ports_match_the_templates():
        want = {
            "edge": {
                ("tcp", port(edge_cfg["tcp"]["listen"]), "TCP"),
                ("websocket", port(edge_cfg["websocket"]["listen"]), "TCP"),
                ("kcp", port(edge_cfg["kcp"]["listen"]), "UDP"),
                ("quic", port(edge_cfg["quic"]["listen"]), "UDP"),
                ("admin", port(edge_cfg["admin_listen"]), "TCP"),
            },
            "broker": {
                ("grpc", port(broker_cfg["listen"]), "TCP"),
                ("admin", port(broker_cfg["admin_listen"]), "TCP"),
            },
            "game-demo": {("grpc", port(game_cfg["listen"]), "TCP")},
        }
        for name, ports in want.items():
            got = {(p["name"], p["containerPort"], p["protocol"])
                   for p in container(deployments[name])["ports"]}
            assert got == ports, f"{name}: {got} != {ports}"
        services = of_kind(docs, "Service")
        exposed = {(p["port"], p["protocol"]) for s in ("edge", "edge-udp")
                   for p in services[s]["spec"]["ports"]}
        players = {(p, proto) for n, p, proto in want["edge"] if n != "admin"}
        assert exposed == players, f"edge load balancers {exposed} != {players}"
        for s in ("edge", "edge-udp"):
            assert services[s]["spec"]["externalTrafficPolicy"] == "Local", s
        assert services["broker"]["spec"]["clusterIP"] == "None", "brokers: headless"

    def configs_are_the_templates():
        [config] = [d for n, d in of_kind(docs, "ConfigMap").items()
                    if n.startswith("janus-config")]
        for name in ROLES:
            text = (ROOT / "configs.tmpl" / f"{name}.toml").read_text()
            assert config["data"][f"{name}.toml"] == text, f"{name}.toml drifted"
        for deployment in deployments.values():
            volumes = deployment["spec"]["template"]["spec"]["volumes"]
            assert {"name": "config", "configMap": {"name": config["metadata"]["name"]}} in volumes

    def unprivileged():
        for name, deployment in deployments.items():
            pod = deployment["spec"]["template"]["spec"]
            assert pod["securityContext"]["runAsNonRoot"] is True, name
            c = container(deployment)["securityContext"]
            assert c["readOnlyRootFilesystem"] is True, name
            assert c["allowPrivilegeEscalation"] is False, name
            assert c["capabilities"]["drop"] == ["ALL"], name

    def network_policies_allow_exactly_the_architecture():
        pods = {}
        for kind in ["Deployment", "StatefulSet"]:
            for d in of_kind(docs, kind).values():
                labels = d["spec"]["template"]["metadata"]["labels"]
                role = labels["janus.dev/role"]
                ports = {(p["containerPort"], p.get("protocol", "TCP"))
                         for p in d["spec"]["template"]["spec"]["containers"][0]["ports"]}
                pods[role] = (labels, ports)
        policies = of_kind(docs, "NetworkPolicy").values()

        def selects(selector, labels):
            ok = set(selector.get("matchLabels", {}).items()) <= set(labels.items())
            for e in selector.get("matchExpressions", []):
                ok &= e["operator"] == "In" and labels.get(e["key"]) in e["values"]
            return ok

        allowed = set()
        for policy in policies:
            spec = policy["spec"]
            for role, (labels, ports) in pods.items():
                if not selects(spec["podSelector"], labels):
                    continue
                for rule in spec.get("ingress", []):
                    sources = set()
                    for peer in rule.get("from", [None]):
                        if peer is None:
                            sources.add("anyone")
                        elif "namespaceSelector" in peer:
                            sources.add(peer["podSelector"]["matchLabels"]["app.kubernetes.io/name"])
                        else:
                            sources |= {r for r, (l, _) in pods.items()
                                        if selects(peer["podSelector"], l)}
                    for p in rule.get("ports", []):
                        if (p["port"], p["protocol"]) in ports:
                            allowed |= {(s, role, p["port"]) for s in sources}
        want = {("anyone", "edge", p) for p in (17001, 17002, 17003, 17004)}
        want |= {("prometheus", "edge", 18100), ("prometheus", "broker", 18101)}
        want |= {("edge", "broker", 17100), ("game", "broker", 17100),
                 ("broker", "game", 17200)}
        if "etcd" in pods:
            want |= {("broker", "redis", 6379), ("broker", "nats", 4222)}
            want |= {(r, "etcd", 2379) for r in ("broker", "edge", "game")}
        assert allowed == want, f"extra {allowed - want}, missing {want - allowed}"
        [deny] = [p for p in policies if p["metadata"]["name"] == "default-deny-ingress"]
        assert deny["spec"]["podSelector"] == {} and "ingress" not in deny["spec"]

    return [validated, drain_before_stop, probes_and_budgets, autoscaler_metrics_exist,
            ports_match_the_templates, configs_are_the_templates, unprivileged,
            network_policies_allow_exactly_the_architecture]


def main():
    passed = failed = 0
    for overlay in OVERLAYS:
        docs = render(overlay)
        for check in checks(overlay, docs):
            try:
                check()
                passed += 1
                print(f"ok {overlay}: {check.__name__}")
            except Exception as e:  # noqa: BLE001 — every failure is reported, then counted
                failed += 1
                print(f"FAILED {overlay}: {check.__name__}: {e}")
    print(f"test result: kubernetes. {passed} passed; {failed} failed")
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
