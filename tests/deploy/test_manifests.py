"""Cluster-launcher configs and KubeRay manifests: they parse, carry what their tools need, agree.

The launcher configs are also checked against the JSON schema Ray itself ships
(``ray/autoscaler/ray-schema.json``) after Ray's own defaults are merged in, as
``ray up`` does. No KubeRay CRD schema is available offline, so the KubeRay
manifests are checked against the required-field schema below.
"""

from __future__ import annotations

import re
import shlex
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from deploy_files import (
    LAUNCHER_CONFIGS,
    RAYCLUSTER,
    RAYJOB,
    all_yaml_files,
    load_yaml,
    ray_versions,
)

DSPEX_INSTALL = re.compile(r"\bpip install\s+(?:-\S+\s+)*(\S*dspex\S*)")
TOKEN_FILE = "~/.ray/auth_token"


# --- every YAML parses ----------------------------------------------------------------


def test_the_deployment_has_all_its_files() -> None:
    names = {path.name for path in all_yaml_files()}
    assert {"ray_cluster.yaml", "ray_cluster.aws.yaml", "raycluster.yaml", "rayjob.yaml"} <= names


@pytest.mark.parametrize("path", all_yaml_files(), ids=lambda p: p.name)
def test_yaml_parses(path: Path) -> None:
    load_yaml(path)


def test_every_file_pins_the_same_ray() -> None:
    versions = ray_versions()
    assert len(versions) >= 5, versions
    assert len(set(versions.values())) == 1, f"Ray versions disagree: {versions}"


# --- cluster launcher (`ray up`) ---------------------------------------------------------------

COMMANDS = {"type": "array", "items": {"type": "string"}}
LAUNCHER_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": [
        "cluster_name",
        "provider",
        "max_workers",
        "file_mounts",
        "setup_commands",
        "head_start_ray_commands",
        "worker_start_ray_commands",
    ],
    "properties": {
        "cluster_name": {"type": "string", "pattern": "^[a-z0-9][-a-z0-9]*$"},
        "provider": {
            "type": "object",
            "required": ["type"],
            "properties": {"type": {"enum": ["local", "aws", "gcp", "azure"]}},
        },
        "max_workers": {"type": "integer", "minimum": 1},
        "file_mounts": {"type": "object", "additionalProperties": {"type": "string"}},
        "setup_commands": COMMANDS,
        "head_setup_commands": COMMANDS,
        "worker_setup_commands": COMMANDS,
        "head_start_ray_commands": {**COMMANDS, "minItems": 1},
        "worker_start_ray_commands": {**COMMANDS, "minItems": 1},
    },
    "allOf": [
        {
            "if": {"properties": {"provider": {"properties": {"type": {"const": "local"}}}}},
            "then": {
                "properties": {
                    "provider": {
                        "required": ["head_ip", "worker_ips"],
                        "properties": {
                            "head_ip": {"type": "string"},
                            "worker_ips": {
                                "type": "array",
                                "minItems": 1,
                                "items": {"type": "string"},
                            },
                        },
                    }
                }
            },
        },
        {
            "if": {"properties": {"provider": {"properties": {"type": {"const": "aws"}}}}},
            "then": {
                "required": ["available_node_types", "head_node_type"],
                "properties": {"provider": {"required": ["region"]}},
            },
        },
    ],
}


@pytest.fixture(params=LAUNCHER_CONFIGS, ids=lambda p: p.name)
def launcher(request: pytest.FixtureRequest) -> dict[str, Any]:
    return load_yaml(request.param)


def setup_of(config: dict[str, Any], role: str) -> list[str]:
    """The setup commands a head or worker node runs (Ray runs setup_commands first)."""
    return [*config.get("setup_commands", []), *config.get(f"{role}_setup_commands", [])]


def ray_starts(commands: list[str]) -> list[str]:
    return [c for c in commands if re.search(r"\bray start\b", c)]


def test_launcher_config_has_the_required_fields(launcher: dict[str, Any]) -> None:
    jsonschema.validate(launcher, LAUNCHER_SCHEMA)


@pytest.mark.parametrize("role", ["head", "worker"])
def test_every_node_installs_dspex_from_the_mounted_checkout(
    launcher: dict[str, Any], role: str
) -> None:
    installs = [m.group(1) for c in setup_of(launcher, role) if (m := DSPEX_INSTALL.search(c))]
    assert installs, f"no dspex install in the {role} setup commands"
    mounts = launcher["file_mounts"]
    # The install reads the repository checkout (".", where pyproject.toml is) that file_mounts copies.
    assert all(mounts.get(path) == "." for path in installs), (installs, mounts)


def test_ray_starts_with_token_auth_and_without_usage_stats(launcher: dict[str, Any]) -> None:
    head = ray_starts(launcher["head_start_ray_commands"])
    worker = ray_starts(launcher["worker_start_ray_commands"])
    assert len(head) == 1 and "--head" in head[0]
    assert len(worker) == 1 and "--address=$RAY_HEAD_IP:" in worker[0]
    for command in head + worker:
        before_ray = command.split("ray start")[0]
        assert "RAY_USAGE_STATS_ENABLED=0" in before_ray, command
        assert "RAY_AUTH_MODE=token" in before_ray, command


def test_every_node_gets_the_token_file_and_no_token_is_written_down(
    launcher: dict[str, Any],
) -> None:
    assert launcher["file_mounts"].get(TOKEN_FILE) == TOKEN_FILE
    text = str(launcher)
    assert "RAY_AUTH_MODE=disabled" not in text
    assert not re.search(r"RAY_AUTH_TOKEN=\S", text), (
        "a literal token does not belong in the config"
    )


def test_local_provider_sizes_max_workers_to_its_machines() -> None:
    # The on-premises file only: cloud providers size the cluster with node types.
    on_prem = load_yaml(LAUNCHER_CONFIGS[0])
    provider = on_prem["provider"]
    assert provider["type"] == "local"
    assert on_prem["max_workers"] == len(provider["worker_ips"])


def test_ray_accepts_the_launcher_config(launcher: dict[str, Any]) -> None:
    """Ray's own preparation and schema, as `ray up` runs them before touching any machine."""
    util = pytest.importorskip("ray.autoscaler._private.util")
    prepared = util.prepare_config(launcher)
    util.validate_config(prepared)
    for role in ("head", "worker"):
        assert any(DSPEX_INSTALL.search(c) for c in prepared[f"{role}_setup_commands"])


# --- KubeRay ----------------------------------------------------------------------------------

QUANTITY = {"type": ["string", "integer"], "pattern": r"^\d+(\.\d+)?(m|k|M|G|T|Ki|Mi|Gi|Ti)?$"}
CONTAINER = {
    "type": "object",
    "required": ["name", "image", "resources"],
    "properties": {
        "name": {"type": "string"},
        "image": {"type": "string", "minLength": 1},
        "env": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["name"],
                "properties": {"name": {"type": "string"}, "value": {"type": "string"}},
            },
        },
        "resources": {
            "type": "object",
            "required": ["requests", "limits"],
            "properties": {
                part: {
                    "type": "object",
                    "required": ["cpu", "memory"],
                    "additionalProperties": QUANTITY,
                }
                for part in ("requests", "limits")
            },
        },
    },
}
POD_TEMPLATE = {
    "type": "object",
    "required": ["spec"],
    "properties": {
        "spec": {
            "type": "object",
            "required": ["containers"],
            "properties": {"containers": {"type": "array", "minItems": 1, "items": CONTAINER}},
        }
    },
}
# KubeRay passes rayStartParams to `ray start` as a map of strings; a YAML number is rejected.
START_PARAMS = {"type": "object", "additionalProperties": {"type": "string"}}
CLUSTER_SPEC = {
    "type": "object",
    "required": ["rayVersion", "authOptions", "headGroupSpec", "workerGroupSpecs"],
    "properties": {
        "rayVersion": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "authOptions": {
            "type": "object",
            "required": ["mode"],
            "properties": {"mode": {"const": "token"}, "secretName": {"type": "string"}},
        },
        "headGroupSpec": {
            "type": "object",
            "required": ["rayStartParams", "template"],
            "properties": {"rayStartParams": START_PARAMS, "template": POD_TEMPLATE},
        },
        "workerGroupSpecs": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "required": [
                    "groupName",
                    "replicas",
                    "minReplicas",
                    "maxReplicas",
                    "rayStartParams",
                    "template",
                ],
                "properties": {
                    "groupName": {"type": "string"},
                    "replicas": {"type": "integer", "minimum": 0},
                    "minReplicas": {"type": "integer", "minimum": 0},
                    "maxReplicas": {"type": "integer", "minimum": 1},
                    "rayStartParams": START_PARAMS,
                    "template": POD_TEMPLATE,
                },
            },
        },
    },
}
METADATA = {
    "type": "object",
    "required": ["name"],
    "properties": {
        "name": {"type": "string", "pattern": "^[a-z0-9]([-a-z0-9]*[a-z0-9])?$", "maxLength": 63}
    },
}


def kuberay_schema(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    return {
        "type": "object",
        "required": ["apiVersion", "kind", "metadata", "spec"],
        "properties": {
            "apiVersion": {"const": "ray.io/v1"},
            "kind": {"const": kind},
            "metadata": METADATA,
            "spec": spec,
        },
    }


RAYCLUSTER_SCHEMA = kuberay_schema("RayCluster", CLUSTER_SPEC)
RAYJOB_SCHEMA = kuberay_schema(
    "RayJob",
    {
        "type": "object",
        "required": ["entrypoint", "rayClusterSpec"],
        "properties": {
            "entrypoint": {"type": "string", "minLength": 1},
            "rayClusterSpec": CLUSTER_SPEC,
            "submissionMode": {
                "enum": ["K8sJobMode", "HTTPMode", "SidecarMode", "InteractiveMode"]
            },
            "shutdownAfterJobFinishes": {"type": "boolean"},
            "ttlSecondsAfterFinished": {"type": "integer", "minimum": 0},
            "activeDeadlineSeconds": {"type": "integer", "minimum": 1},
        },
    },
)


def cluster_specs() -> list[tuple[str, dict[str, Any]]]:
    return [
        ("raycluster", load_yaml(RAYCLUSTER)["spec"]),
        ("rayjob", load_yaml(RAYJOB)["spec"]["rayClusterSpec"]),
    ]


def groups(spec: dict[str, Any]) -> list[dict[str, Any]]:
    return [spec["headGroupSpec"], *spec["workerGroupSpecs"]]


def ray_container(group: dict[str, Any]) -> dict[str, Any]:
    # KubeRay runs Ray in the first container of each pod template.
    return group["template"]["spec"]["containers"][0]


def quantity(value: str | int) -> float:
    """A Kubernetes quantity in base units (cores, bytes)."""
    text = str(value)
    units = {
        "m": 1e-3,
        "k": 1e3,
        "M": 1e6,
        "G": 1e9,
        "T": 1e12,
        "Ki": 2**10,
        "Mi": 2**20,
        "Gi": 2**30,
        "Ti": 2**40,
    }
    match = re.fullmatch(r"(\d+(?:\.\d+)?)([a-zA-Z]*)", text)
    assert match and match.group(2) in {"", *units}, f"not a quantity: {value!r}"
    return float(match.group(1)) * units.get(match.group(2), 1)


def test_raycluster_has_the_required_fields() -> None:
    jsonschema.validate(load_yaml(RAYCLUSTER), RAYCLUSTER_SCHEMA)


def test_rayjob_has_the_required_fields() -> None:
    jsonschema.validate(load_yaml(RAYJOB), RAYJOB_SCHEMA)


def test_schemas_reject_common_mistakes() -> None:
    """The KubeRay schema above catches what it is there for."""
    good = load_yaml(RAYCLUSTER)
    broken = [
        {**good, "apiVersion": "ray.io/v1alpha1"},
        {
            **good,
            "spec": {
                **good["spec"],
                "headGroupSpec": {
                    **good["spec"]["headGroupSpec"],
                    "rayStartParams": {"num-cpus": 0},
                },
            },
        },
        {**good, "spec": {k: v for k, v in good["spec"].items() if k != "authOptions"}},
        {**good, "metadata": {"name": "Dspex_Cluster"}},
    ]
    for manifest in broken:
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate(manifest, RAYCLUSTER_SCHEMA)


@pytest.mark.parametrize(
    ("name", "spec"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_every_ray_container_runs_the_dspex_image_without_usage_stats(
    name: str, spec: dict[str, Any]
) -> None:
    images = {ray_container(group)["image"] for group in groups(spec)}
    assert len(images) == 1, f"{name}: head and workers run different images {images}"
    repository = images.pop().rsplit(":", 1)[0]
    assert repository.rsplit("/", 1)[-1] == "dspex", (
        f"{name}: not the image deploy/Dockerfile builds"
    )
    for group in groups(spec):
        env = {e["name"]: e.get("value") for e in ray_container(group).get("env", [])}
        assert env.get("RAY_USAGE_STATS_ENABLED") == "0", (
            f"{name}: usage stats on in a Ray container"
        )


@pytest.mark.parametrize(
    ("name", "spec"), cluster_specs(), ids=lambda v: v if isinstance(v, str) else ""
)
def test_resources_are_sized_sensibly(name: str, spec: dict[str, Any]) -> None:
    for group in groups(spec):
        resources = ray_container(group)["resources"]
        for kind, floor in (("cpu", 1.0), ("memory", 2 * 2**30)):
            requested, limit = (
                quantity(resources["requests"][kind]),
                quantity(resources["limits"][kind]),
            )
            assert floor <= requested <= limit, (
                f"{name}: {kind} request {requested} vs limit {limit}"
            )
    for worker in spec["workerGroupSpecs"]:
        assert worker["minReplicas"] <= worker["replicas"] <= worker["maxReplicas"], worker[
            "groupName"
        ]


def test_both_manifests_run_the_same_image_and_token_secret() -> None:
    (_, cluster), (_, job) = cluster_specs()
    assert (
        ray_container(cluster["headGroupSpec"])["image"]
        == ray_container(job["headGroupSpec"])["image"]
    )
    assert cluster["authOptions"] == job["authOptions"]
    assert tuple(int(p) for p in cluster["rayVersion"].split(".")[:2]) >= (2, 52), (
        "token auth needs Ray 2.52+"
    )


def test_rayjob_entrypoint_is_a_dspex_command_with_real_options() -> None:
    import typer

    from dspex.cli import app

    argv = shlex.split(load_yaml(RAYJOB)["spec"]["entrypoint"])
    assert argv[0] == "dspex", argv
    cli = typer.main.get_command(app)
    command = cli.commands.get(argv[1])  # type: ignore[attr-defined]
    assert command is not None, f"`dspex {argv[1]}` is not a dspex command"
    known = {opt for param in command.params for opt in param.opts}
    given = {word.split("=")[0] for word in argv[2:] if word.startswith("--")}
    assert given <= known, f"unknown options for `dspex {argv[1]}`: {given - known}"
