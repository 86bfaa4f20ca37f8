"""examples/policy/: the admission policy that makes cache_scope a namespace boundary, its CEL
evaluated against the example pods and against pods that try to get around it."""

import copy
import glob
import os

import celpy
import pytest
import yaml

from .test_examples import EXAMPLES, load

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
POLICY = os.path.join(REPO, "examples", "policy", "cache-scope-policy.yaml")


@pytest.fixture(scope="module")
def policy():
    with open(POLICY) as handle:
        policy, binding = yaml.safe_load_all(handle)
    assert binding["spec"]["policyName"] == policy["metadata"]["name"]
    assert binding["spec"]["validationActions"] == ["Deny"]
    assert policy["spec"]["failurePolicy"] == "Fail"
    (rule,) = policy["spec"]["matchConstraints"]["resourceRules"]
    assert rule["resources"] == ["pods"] and set(rule["operations"]) == {"CREATE", "UPDATE"}
    env = celpy.Environment()
    variables = [(v["name"], env.program(env.compile(v["expression"]))) for v in policy["spec"]["variables"]]
    checks = [(c["message"], env.program(env.compile(c["expression"]))) for c in policy["spec"]["validations"]]

    def denials(pod):
        """The messages of every validation the pod fails, as the API server would evaluate them."""
        activation = {"object": celpy.json_to_cel(pod)}
        values = {name: program.evaluate(activation) for name, program in variables}
        activation["variables"] = celpy.celtypes.MapType({celpy.celtypes.StringType(k): v for k, v in values.items()})
        return [message for message, program in checks if not program.evaluate(activation)]

    return denials


def example_pod(path):
    spec, volume = load(path)
    return {"apiVersion": "v1", "kind": "Pod", "metadata": {"name": "x"}, "spec": copy.deepcopy(spec)}, volume["name"]


def with_options(path, **options):
    pod, name = example_pod(path)
    (volume,) = [v for v in pod["spec"]["volumes"] if v["name"] == name]
    source = volume["csi"]["volumeAttributes"] if "csi" in volume else volume["flexVolume"]["options"]
    source.update(options)
    return pod


@pytest.mark.parametrize("path", EXAMPLES, ids=os.path.basename)
def test_the_examples_are_admitted(policy, path):
    assert policy(example_pod(path)[0]) == []
    assert policy(with_options(path, cache_scope="namespace")) == []


@pytest.mark.parametrize("key", ["kubernetes.io/pod.namespace", "kubernetes.io/pod.uid", "kubernetes.io/fsType"])
def test_a_pod_that_sets_kubelets_own_keys_is_denied(policy, key):
    (message,) = policy(with_options(EXAMPLES[0], **{key: "team-b"}))
    assert "kubernetes.io/*" in message


@pytest.mark.parametrize("scope", ["node", "team-b-cache", ""])
def test_a_pod_that_picks_another_scope_is_denied(policy, scope):
    (message,) = policy(with_options(EXAMPLES[0], cache_scope=scope))
    assert "cache_scope: namespace" in message


CSI_EXAMPLE = os.path.join(REPO, "examples", "dind-pod-csi.yaml")


@pytest.mark.parametrize("scope", ["node", "team-b-cache"])
def test_a_csi_pod_that_picks_another_scope_is_denied(policy, scope):
    (message,) = policy(with_options(CSI_EXAMPLE, cache_scope=scope))
    assert message.startswith("vol-plugin.ax volumes may only use cache_scope: namespace")


def test_pods_without_slabs_are_not_its_business(policy):
    assert policy({"spec": {"containers": [{"name": "c", "image": "x"}]}}) == []
    assert policy({"spec": {"volumes": [{"name": "v", "flexVolume": {"driver": "other/driver",
                                                                      "options": {"kubernetes.io/pod.namespace": "x"}}}]}}) == []


def test_there_is_one_policy_file():
    assert glob.glob(os.path.join(REPO, "examples", "policy", "*.yaml")) == [POLICY]
