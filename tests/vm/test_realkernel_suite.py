"""How the real-kernel suite splits its files over the guests that run side by side."""

from __future__ import annotations

from .realkernel_suite import DEFAULT_WEIGHT, REBOOT_FILES, plan_lanes

FILES = ["test_a.py", "test_b.py", "test_c.py", "test_d.py", "test_e.py", *REBOOT_FILES]
WEIGHTS = {"test_a.py": 9.0, "test_b.py": 5.0, "test_c.py": 4.0, "test_d.py": 3.0, "test_e.py": 1.0, REBOOT_FILES[0]: 2.0,
           REBOOT_FILES[1]: 0.5}


def test_every_file_runs_once_and_each_reboot_scenario_has_a_lane_of_its_own():
    plan = plan_lanes(FILES, WEIGHTS)
    assert sorted(f for lane in plan for f in lane) == sorted(FILES)
    # A lane's second boot finds one node's pool: two reboot scenarios never share a lane.
    assert REBOOT_FILES[0] in plan[0] and REBOOT_FILES[1] in plan[1]


def test_the_lanes_come_out_about_even():
    plan = plan_lanes(FILES, WEIGHTS)
    loads = [sum(WEIGHTS[f] for f in lane) for lane in plan]
    assert len(plan) == 2 and max(loads) - min(loads) <= max(WEIGHTS.values()) / 2, (plan, loads)


def test_a_file_not_yet_measured_still_runs_with_the_default_weight():
    plan = plan_lanes(["test_new.py", "test_a.py"], {"test_a.py": DEFAULT_WEIGHT / 2})
    assert sorted(f for lane in plan for f in lane) == ["test_a.py", "test_new.py"]
    assert ["test_new.py"] in plan and ["test_a.py"] in plan


def test_one_file_makes_one_lane():
    assert plan_lanes(["test_a.py"], WEIGHTS) == [["test_a.py"]]
