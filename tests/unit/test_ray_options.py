"""The Ray backend's options and capacity rules, and the config that becomes them: no Ray needed."""

from pathlib import Path

import pytest

from cluster import backend_options
from cluster.local.options import LocalWorkerOptions
from cluster.ray.options import RayWorkerOptions, capacity_shortfall, parse_resources
from fedrun.errors import FedrunError
from tests.support.configs import flat_config

GPU_WORKER = {"CPU": 1.0, "GPU": 1.0}
TWO_GPU_NODES = [{"CPU": 4.0, "GPU": 1.0}, {"CPU": 4.0, "GPU": 1.0}]


def test_bundle_holds_what_each_worker_reserves_in_ray_names() -> None:
    options = RayWorkerOptions(cpus=2, gpus=0.5, resources={"zone_a": 1})

    assert options.bundle == {"CPU": 2, "GPU": 0.5, "zone_a": 1}
    assert RayWorkerOptions().bundle == {"CPU": 1.0}


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"placement_strategy": "RANDOM"}, "placement_strategy must be one of PACK"),
        ({"gpus": -1}, "gpus must not be negative"),
        ({"resources": {"GPU": 1}}, "'GPU' is set with gpus"),
        ({"resources": {"zone_a": 0}}, "positive amount"),
        ({"cpus": 0}, "must reserve something"),
        ({"process": LocalWorkerOptions(isolation="netns")}, "isolation must be 'none'"),
    ],
)
def test_invalid_options_say_what_to_change(fields: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        RayWorkerOptions(**fields)


def test_more_gpus_than_the_cluster_has_names_resource_asked_and_had() -> None:
    problem = capacity_shortfall(GPU_WORKER, 3, "PACK", TWO_GPU_NODES)

    assert problem is not None
    assert "GPU=3" in problem and "GPU=2 in all" in problem and "1, 1 per node" in problem


def test_every_resource_that_falls_short_is_named() -> None:
    problem = capacity_shortfall({"CPU": 3.0, "GPU": 1.0}, 3, "PACK", TWO_GPU_NODES)

    assert problem is not None and "CPU=9" in problem and "GPU=3" in problem


def test_resource_no_node_has_is_named() -> None:
    problem = capacity_shortfall({"CPU": 1.0, "tpu": 1.0}, 1, "PACK", TWO_GPU_NODES)

    assert problem is not None and "tpu=1" in problem and "tpu=0 in all" in problem


def test_bundle_split_across_nodes_does_not_fit() -> None:
    # 2 GPUs in the cluster, but no node has both GPUs one worker asks for.
    problem = capacity_shortfall({"GPU": 2.0}, 1, "PACK", TWO_GPU_NODES)

    assert problem is not None and "no single node" in problem


@pytest.mark.parametrize(
    ("strategy", "count", "nodes", "fits"),
    [
        ("PACK", 2, TWO_GPU_NODES, True),
        ("SPREAD", 2, TWO_GPU_NODES, True),
        ("STRICT_SPREAD", 2, TWO_GPU_NODES, True),
        ("STRICT_PACK", 2, TWO_GPU_NODES, False),  # one node has a single GPU
        ("STRICT_PACK", 2, [{"CPU": 4.0, "GPU": 2.0}], True),
        ("STRICT_SPREAD", 2, [{"CPU": 4.0, "GPU": 2.0}], False),  # a single node
        ("PACK", 3, [{"CPU": 1.5, "GPU": 2.0}, {"CPU": 1.5, "GPU": 2.0}], False),  # 1 per node by CPU
    ],
)
def test_strategies_are_checked_against_whole_workers_per_node(
    strategy: str, count: int, nodes: list, fits: bool
) -> None:
    assert (capacity_shortfall(GPU_WORKER, count, strategy, nodes) is None) == fits


def test_fractional_amounts_add_up_without_rounding_errors() -> None:
    assert capacity_shortfall({"CPU": 0.1}, 10, "STRICT_PACK", [{"CPU": 1.0}]) is None


def test_resources_flag_parses_into_a_dict() -> None:
    assert parse_resources("") == {}
    assert parse_resources(" zone_a=1, scratch_gb = 0.5 ") == {"zone_a": 1.0, "scratch_gb": 0.5}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("zone_a", "not name=amount"),
        ("zone_a=many", "not name=amount"),
        ("zone_a=0", "positive amount"),
        ("=1", "not name=amount"),
        ("GPU=1", "--worker-gpus"),
        ("a=1,a=2", "twice"),
    ],
)
def test_malformed_resources_flag_is_a_user_error(text: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        parse_resources(text)
    with pytest.raises(FedrunError, match=message):
        flat_config(backend="ray", worker_resources=text)


def test_ray_config_becomes_ray_worker_options(tmp_path: Path) -> None:
    config = flat_config(
        backend="ray",
        worker_cpus=0.5,
        worker_gpus=1.0,
        worker_resources="zone_a=1",
        placement_strategy="SPREAD",
        worker_max_concurrent_calls=3,
        worker_start_timeout_s=30.0,
    )

    options = backend_options(config.cluster, tmp_path / "workers")

    assert options == RayWorkerOptions(
        cpus=0.5,
        gpus=1.0,
        resources={"zone_a": 1.0},
        placement_strategy="SPREAD",
        process=LocalWorkerOptions(
            max_concurrent_computation_calls=3,
            ready_timeout_s=30,
            log_dir=tmp_path / "workers",
            isolation="none",
            timeout_name="--worker-start-timeout-s",  # messages name the flag that sets it
        ),
    )
    joined = backend_options(
        flat_config(backend="ray", ray_address="head:6379").cluster, tmp_path / "workers"
    )
    assert joined.address == "head:6379" and joined.process.log_dir is None  # not this machine's
