"""cache_scope decides which pods may inherit a slab: the node (default), the pod's namespace,
or an explicit key. A slab made in one scope is never handed to a pod of another."""

from . import node
from .node import Pod, check_pool, read_marker, slab_at, slabs, write_marker


def scoped(scope: str, namespace: str = "ci") -> Pod:
    return Pod(size_mb=160, extra=(("cache_scope", scope), ("kubernetes.io/pod.namespace", namespace)))


def run_pod(kubelet, pod: Pod, marker: str = None) -> tuple:
    """Mount, read what the slab already held, leave a marker, unmount: one short CI pod."""
    assert kubelet.mount(pod).ok, kubelet.calls[-1].message
    name, found = slab_at(pod), read_marker(pod)
    if marker:
        write_marker(pod, marker)
    assert kubelet.unmount(pod).ok
    return name, found


def test_namespace_scope_keeps_each_namespaces_cache_to_itself(kubelet):
    slab_a, _ = run_pod(kubelet, scoped("namespace", "team-a"), "images of team-a")
    assert slabs()[slab_a].tags["ax.scope"] == "ns.team-a"

    slab_b, seen_by_b = run_pod(kubelet, scoped("namespace", "team-b"), "images of team-b")
    assert slab_b != slab_a and seen_by_b is None, "team-b must not inherit team-a's slab"

    slab_node, seen_by_node = run_pod(kubelet, Pod(size_mb=160))
    assert slab_node not in (slab_a, slab_b) and seen_by_node is None, "a node-scoped pod takes no namespace's slab"

    again, seen = run_pod(kubelet, scoped("namespace", "team-a"))
    assert (again, seen) == (slab_a, "images of team-a")
    assert {s.tags["ax.scope"] for s in slabs().values()} == {"ns.team-a", "ns.team-b", "node"}
    check_pool()


def test_an_explicit_key_is_shared_across_namespaces_and_nothing_else(kubelet):
    first, _ = run_pod(kubelet, scoped("release-builds", "team-a"), "release cache")
    assert slabs()[first].tags["ax.scope"] == "key.release-builds"
    other_key, seen = run_pod(kubelet, scoped("nightly", "team-a"))
    assert other_key != first and seen is None
    same_key, seen = run_pod(kubelet, scoped("release-builds", "team-b"))
    assert (same_key, seen) == (first, "release cache")
    check_pool()


def test_the_nodes_default_scope_applies_to_pods_that_name_none(kubelet):
    with open("/etc/ax-vol-plugin/vol_plugin.conf", "a") as handle:
        handle.write("default_cache_scope = namespace\n")
    slab_a, _ = run_pod(kubelet, Pod(size_mb=160, extra=(("kubernetes.io/pod.namespace", "team-a"),)), "a")
    assert slabs()[slab_a].tags["ax.scope"] == "ns.team-a"
    slab_b, seen = run_pod(kubelet, Pod(size_mb=160, extra=(("kubernetes.io/pod.namespace", "team-b"),)))
    assert slab_b != slab_a and seen is None
    check_pool()


def test_a_bad_cache_scope_is_refused_and_touches_nothing(kubelet):
    run_pod(kubelet, Pod(size_mb=160))
    before = slabs()
    reply = kubelet.mount(Pod(size_mb=160, extra=(("cache_scope", "a b;rm -rf /"),)))
    assert reply.status == "Failure" and "cache_scope" in reply.message
    assert slabs() == before and node.slab_mounts() == {}
