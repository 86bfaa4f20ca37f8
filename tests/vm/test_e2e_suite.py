"""The end-to-end suite's host-side pieces: the kubelet build module, the offline images, and the
pods made from examples/ (only their images and pull policy may differ from the example)."""

from __future__ import annotations

import fcntl
import hashlib
import importlib.util
import io
import json
import os
import sys
import tarfile
import threading

import pytest

from tests.e2e import build, cluster, images

KUBERNETES_GO_MOD = """module k8s.io/kubernetes

go 1.26.0

require (
\tk8s.io/api v0.0.0
\tk8s.io/client-go v0.0.0
)

replace (
\tk8s.io/api => ./staging/src/k8s.io/api
\tk8s.io/client-go => ./staging/src/k8s.io/client-go
\tk8s.io/kubelet => ./staging/src/k8s.io/kubelet
\tgithub.com/example/fork => github.com/example/fork v1.2.3
\tk8s.io/other => ./staging/src/k8s.io/not-the-same
)
"""


def test_the_staging_modules_are_read_from_kubernetes_own_go_mod(tmp_path):
    path = tmp_path / "kubernetes.mod"
    path.write_text(KUBERNETES_GO_MOD)
    assert build.staging_modules(str(path)) == ["k8s.io/api", "k8s.io/client-go", "k8s.io/kubelet"]


def test_the_build_module_replaces_each_staging_module_with_its_release_of_the_same_minor():
    text = build.go_mod(["k8s.io/api", "k8s.io/kubelet"])
    assert f"require k8s.io/kubernetes {build.KUBERNETES}" in text
    minor_patch = build.KUBERNETES.split(".", 1)[1]
    assert f"\tk8s.io/api => k8s.io/api v0.{minor_patch}" in text
    assert f"\tk8s.io/kubelet => k8s.io/kubelet v0.{minor_patch}" in text


def test_the_binaries_are_stamped_with_the_release():
    flags = build.ldflags()
    assert f"k8s.io/component-base/version.gitVersion={build.KUBERNETES}" in flags
    assert "gitMinor=" + build.KUBERNETES.split(".")[1] in flags


def _members(path: str) -> dict:
    with tarfile.open(path) as archive:
        return {m.name: archive.extractfile(m).read() for m in archive.getmembers() if m.isfile()}


def test_an_image_is_a_docker_archive_with_one_layer_named_by_its_digest(tmp_path):
    path = images.pause_image(str(tmp_path / "pause.tar"))
    members = _members(path)
    (manifest,) = json.loads(members["manifest.json"])
    assert manifest["RepoTags"] == [images.PAUSE_IMAGE]
    config = json.loads(members[manifest["Config"]])
    (layer_name,) = manifest["Layers"]
    assert config["rootfs"]["diff_ids"] == ["sha256:" + hashlib.sha256(members[layer_name]).hexdigest()]
    with tarfile.open(fileobj=io.BytesIO(members[layer_name])) as layer:
        names = layer.getnames()
        assert "bin/busybox" in names and layer.getmember("bin/sh").issym()
        assert all(m.mtime == 0 and m.uid == 0 for m in layer.getmembers())
    assert config["config"]["Entrypoint"][0] == "/bin/sh"


def test_the_same_inputs_give_the_same_layer(tmp_path):
    first = _members(images.cli_image(str(tmp_path / "a.tar")))
    second = _members(images.cli_image(str(tmp_path / "b.tar")))
    assert first == second


def test_a_dynamic_binary_brings_the_libraries_it_loads(tmp_path):
    layer = images.Layer()
    layer.binary("/usr/sbin/runc")
    libraries = [path for path in layer.files if "/lib" in path]
    assert any(os.path.basename(p).startswith("libseccomp") for p in libraries)
    assert any(os.path.basename(p).startswith("ld-linux") for p in libraries)


def test_the_plugin_image_brings_bytecode_that_its_python_takes_as_it_is(tmp_path):
    # Checked against the sources' times, which the layer fixes, bytecode would be refused and every
    # process in the container would compile the stdlib, grpc and the plugin again.
    members = _members(images.csi_plugin_image(str(tmp_path / "csi.tar")))
    (layer_name,) = json.loads(members["manifest.json"])[0]["Layers"]
    with tarfile.open(fileobj=io.BytesIO(members[layer_name])) as layer:
        files = {m.name: m for m in layer.getmembers() if m.isfile()}
        sources = [name for name in files if name.endswith(".py")]
        assert "opt/ax-vol-plugin/flexdriver/csi/server.py" in sources and any("/grpc/" in n for n in sources)
        for source in sources:
            directory, name = os.path.split(source)
            pyc = f"{directory}/__pycache__/{name[:-3]}.{sys.implementation.cache_tag}.pyc"
            assert pyc in files, source
            header = layer.extractfile(files[pyc]).read(16)
            assert header[:4] == importlib.util.MAGIC_NUMBER and int.from_bytes(header[4:8], "little") == 0b01, pyc
        assert not [n for n in files if n.endswith(".pyc") and f".{sys.implementation.cache_tag}." not in n]


@pytest.mark.parametrize("example", ["dind-pod.yaml", "ci-runner-job.yaml"])
def test_a_pod_from_an_example_differs_only_in_its_images_and_pull_policy(example):
    source = cluster.load_example(example)
    expected = source["spec"] if source["kind"] == "Pod" else source["spec"]["template"]["spec"]
    pod = cluster.pod_from_example(example, "a-name")
    assert pod["metadata"] == {"name": "a-name"}
    spec = pod["spec"]
    for made, original in zip(spec["containers"], expected["containers"]):
        assert made["image"] == cluster.IMAGE_FOR[original["image"]]
        assert made["imagePullPolicy"] == "Never"
        assert {k: v for k, v in made.items() if k not in ("image", "imagePullPolicy")} == \
            {k: v for k, v in original.items() if k not in ("image", "imagePullPolicy")}
    assert {k: v for k, v in spec.items() if k != "containers"} == {k: v for k, v in expected.items() if k != "containers"}


@pytest.fixture
def build_dir(tmp_path, monkeypatch):
    monkeypatch.setattr(build, "BUILD_DIR", str(tmp_path))
    monkeypatch.setattr(build, "BIN_DIR", str(tmp_path / "bin"))
    built = []

    def fake_build(programs):
        built.append(programs)
        _present(*programs)
        return {"build_s": 1.0}

    monkeypatch.setattr(build, "_build_locked", fake_build)
    monkeypatch.setattr(build, "size_mb", lambda path: 0.0)  # not the machine's real Go caches
    return built


def _present(*programs: str) -> None:
    os.makedirs(build.BIN_DIR, exist_ok=True)
    for program in programs:
        with open(build.binary(program), "w") as handle:
            handle.write("#!/bin/sh\n")
        os.chmod(build.binary(program), 0o755)


def test_only_the_programs_missing_from_the_cache_are_built(build_dir):
    _present("kubelet", "etcd")
    assert build.build(("kubelet", "etcd")) == {} and build_dir == []
    assert build.build(build.PROGRAMS) == {"build_s": 1.0}
    assert build_dir == [("kube-apiserver",)]


def test_a_main_package_is_built_to_the_name_go_build_gives_it():
    assert build.output_name(build.PACKAGES["kubelet"]) == "kubelet"
    assert build.output_name(build.PACKAGES["etcd"]) == "server"  # go.etcd.io/etcd/server/v3
    assert build.output_name("example.com/tool/v10") == "tool" and build.output_name("example.com/v1") == "v1"


def test_the_suite_selection_is_what_the_suite_runs_and_unknown_programs_are_refused(build_dir):
    with pytest.raises(SystemExit, match="not kube-scheduler"):
        build.main(["kube-scheduler"])
    assert build.main(list(build.SUITE_PROGRAMS)) == 0
    assert build_dir == [build.SUITE_PROGRAMS]


def test_a_second_build_waits_for_the_one_running_then_finds_its_binaries(build_dir):
    os.makedirs(build.BIN_DIR)
    results = []
    with open(os.path.join(build.BUILD_DIR, ".lock"), "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        second = threading.Thread(target=lambda: results.append(build.build(build.SUITE_PROGRAMS)))
        second.start()
        second.join(0.5)
        assert second.is_alive() and not results, "the second build did not wait for the lock"
        _present(*build.SUITE_PROGRAMS)  # what the first build leaves
    second.join(10)
    assert results == [{}] and build_dir == []


def test_the_csi_plugin_pod_is_the_daemonsets_with_only_its_image_and_pull_policy_changed():
    daemonset = cluster.load_deploy("daemonset.yaml")
    template = daemonset["spec"]["template"]
    pod = cluster.csi_plugin_pod()
    assert pod["metadata"]["name"] == cluster.CSI_PLUGIN_NAME == daemonset["metadata"]["name"]
    assert pod["metadata"]["namespace"] == cluster.load_deploy("kustomization.yaml")["namespace"]
    (made,), (original,) = pod["spec"]["containers"], template["spec"]["containers"]
    assert (made["image"], made["imagePullPolicy"]) == (images.CSI_PLUGIN_IMAGE, "Never")
    assert {k: v for k, v in made.items() if k not in ("image", "imagePullPolicy")} == \
        {k: v for k, v in original.items() if k not in ("image", "imagePullPolicy")}
    assert {k: v for k, v in pod["spec"].items() if k != "containers"} == \
        {k: v for k, v in template["spec"].items() if k != "containers"}


def test_the_csi_plugin_image_brings_python_the_driver_lvm_and_its_udev_less_config(tmp_path):
    members = _members(images.csi_plugin_image(str(tmp_path / "csi.tar")))
    (manifest,) = json.loads(members["manifest.json"])
    config = json.loads(members[manifest["Config"]])["config"]
    assert config["Entrypoint"] == ["/usr/bin/python3", "-m", "flexdriver.csi"]
    assert f"PYTHONPATH={images.PLUGIN_HOME}" in config["Env"]
    with tarfile.open(fileobj=io.BytesIO(members[manifest["Layers"][0]])) as layer:
        names = set(layer.getnames())
        assert layer.getmember("sbin").issym() and layer.getmember("usr/sbin/lvs").issym()
        with open(os.path.join(cluster.REPO, "packaging", "lvmlocal-csi.conf"), "rb") as handle:
            assert layer.extractfile("etc/lvm/lvmlocal.conf").read() == handle.read()
    site = images.PLUGIN_SITE.strip("/")
    for name in ("usr/bin/python3.11", "usr/sbin/lvm", "usr/sbin/mkfs.xfs", "usr/sbin/mke2fs", "usr/sbin/pdata_tools",
                 "usr/bin/setpriv", "usr/lib/python3.11/json/__init__.py", f"{site}/grpc/__init__.py",
                 f"{site}/google/protobuf/__init__.py", f"{site}/typing_extensions.py", f"{site}/ax_csi_api/csi_pb2.py",
                 "opt/ax-vol-plugin/flexdriver/csi/server.py"):
        assert name in names, f"{name} is not in the plugin's image"
    assert not any(n.startswith("usr/lib/python3.11/test/") for n in names)
    assert any(os.path.basename(n).startswith("libdevmapper") for n in names)
