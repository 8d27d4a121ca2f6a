"""The pilot without a server: plan reading and job expansion, the results file, the report."""

import json
import os
import sys

import pytest
from PIL import Image

import identity_media
from conftest import ROOT

sys.path.insert(0, ROOT)
from engine.pilot import plan as plan_mod, report, results  # noqa: E402

CONSENT = {"subject": "Eileen Collins", "purpose": "pilot", "valid_until": "2099-12-31", "document_id": "C-1"}


@pytest.fixture
def photos(tmp_path):
    Image.fromarray(identity_media.astronaut()).save(tmp_path / "a.png")
    Image.fromarray(identity_media.grace_hopper()).save(tmp_path / "g.png")
    return tmp_path


def write_plan(folder, **over):
    plan = {"workflow": "standin_wan21_t2v_sample_video", "prompts": ["first prompt", "second prompt"],
            "seeds": [1, 2], "grid": {"strength": [0.5, 1.0]},
            "people": [{"name": "astronaut", "photo": "a.png", "consent": CONSENT},
                       {"name": "hopper", "photo": "g.png"}]}
    plan.update(over)
    path = os.path.join(folder, "plan.json")
    with open(path, "w") as f:
        json.dump(plan, f)
    return path


def test_every_combination_is_one_job_with_its_own_key(photos):
    plan = plan_mod.load(write_plan(photos))
    assert len(plan.jobs) == 2 * 2 * 2 * 2
    assert len({j.key for j in plan.jobs}) == 16
    combos = {(j.person.name, j.prompt_text, j.seed, j.settings["strength"]) for j in plan.jobs}
    assert len(combos) == 16
    job = next(j for j in plan.jobs if j.person.name == "hopper" and j.seed == 2 and j.settings["strength"] == 0.5
               and j.prompt_text == "second prompt")
    p = job.prompt
    assert p["11"]["inputs"]["strength"] == 0.5
    assert p["13"]["inputs"]["seed"] == 2
    assert p["3"]["inputs"]["text"] == "second prompt"
    assert p["4"]["inputs"]["text"] != "second prompt"  # the negative prompt is left alone
    assert p["6"]["inputs"]["image"] == job.person.upload_name
    assert p["21"]["inputs"]["filename_prefix"] == plan_mod.output_prefix(job.key)
    # the key is the prompt: the same plan read again gives the same keys
    assert [j.key for j in plan_mod.load(write_plan(photos)).jobs] == [j.key for j in plan.jobs]


def test_consent_record_is_inserted_before_apply_and_save(photos):
    plan = plan_mod.load(write_plan(photos))
    with_consent = next(j for j in plan.jobs if j.person.name == "astronaut").prompt
    (cid,) = [n for n, node in with_consent.items() if node["class_type"] == plan_mod.CONSENT]
    assert with_consent[cid]["inputs"]["identity"] == ["8", 0]
    assert with_consent[cid]["inputs"]["subject"] == "Eileen Collins"
    assert with_consent["11"]["inputs"]["identity"] == [cid, 0]
    assert with_consent["21"]["inputs"]["identity"] == [cid, 0]
    without = next(j for j in plan.jobs if j.person.name == "hopper").prompt
    assert not [n for n in without.values() if n["class_type"] == plan_mod.CONSENT]
    assert without["11"]["inputs"]["identity"] == ["8", 0]


def test_widgets_by_title_class_or_id_and_fixed_settings(photos):
    wf = json.load(open(os.path.join(plan_mod.API_DIR, "standin_wan21_t2v_sample_video.json")))
    wf["13"]["_meta"] = {"title": "My Sampler"}
    with open(photos / "wf.json", "w") as f:
        json.dump(wf, f)
    plan = plan_mod.load(write_plan(photos, workflow="wf.json", prompts=["p"], seeds=[3],
                                    grid={"My Sampler.cfg": [1.0, 4.0], "StandIn_ApplyRSACPM.end_percent": [0.6],
                                          "13.steps": [3]},
                                    set={"My Sampler.width": 320}))
    assert len(plan.jobs) == 2 * 2
    for j in plan.jobs:
        assert j.prompt["13"]["inputs"]["cfg"] == j.settings["My Sampler.cfg"]
        assert j.prompt["13"]["inputs"]["steps"] == 3 and j.prompt["13"]["inputs"]["width"] == 320
        assert j.prompt["11"]["inputs"]["end_percent"] == 0.6


@pytest.mark.parametrize("over, words", [
    ({"grid": {"lora_strength": [0.5]}}, "LoraLoaderModelOnly"),
    ({"grid": {"Nope.strength": [1]}}, "names no node"),
    ({"grid": {"StandIn_ApplyRSACPM.strenght": [1]}}, "has no input 'strenght'"),
    ({"grid": {"strength": []}}, "non-empty list"),
    ({"workflow": "no_such_workflow"}, "not found"),
    ({"people": [{"name": "x", "photo": "missing.png"}]}, "not there"),
    ({"people": [{"name": "x", "photo": "a.png", "consent": {"subject": "x", "purpose": "y",
                                                             "valid_until": "2001-01-01", "document_id": "d"}}]},
     "expired"),
    ({"grid": {"strength": [1.0, 1.0]}}, "same prompt"),
    ({"colour": 1}, "unknown keys"),
])
def test_plan_errors_say_what_to_fix(photos, over, words):
    with pytest.raises(plan_mod.PlanError, match=words):
        plan_mod.load(write_plan(photos, **over))


def test_toml_and_json_plans_give_the_same_jobs(photos):
    toml = photos / "plan.toml"
    toml.write_text('workflow = "standin_wan21_t2v_sample_video"\nprompts = ["first prompt", "second prompt"]\n'
                    'seeds = [1, 2]\n[grid]\nstrength = [0.5, 1.0]\n'
                    '[[people]]\nname = "astronaut"\nphoto = "a.png"\n[people.consent]\n'
                    + "".join(f'{k} = "{v}"\n' for k, v in CONSENT.items()) +
                    '[[people]]\nname = "hopper"\nphoto = "g.png"\n')
    assert [j.key for j in plan_mod.load(str(toml)).jobs] == [j.key for j in plan_mod.load(write_plan(photos)).jobs]


def test_example_plan_reads(tmp_path):
    """docs/pilot_plan.toml, the documented example, is a valid plan (its photos stand in here)."""
    import shutil
    import tomllib
    src = os.path.join(ROOT, "docs", "pilot_plan.toml")
    data = tomllib.loads(open(src, encoding="utf-8").read())
    shutil.copy(src, tmp_path / "plan.toml")
    for person in data["people"]:
        os.makedirs(os.path.dirname(tmp_path / person["photo"]), exist_ok=True)
        Image.fromarray(identity_media.astronaut()).save(tmp_path / person["photo"])
    plan = plan_mod.load(str(tmp_path / "plan.toml"))
    n = len(data["people"]) * len(data["prompts"]) * len(data["seeds"])
    for values in data["grid"].values():
        n *= len(values)
    assert len(plan.jobs) == n


def test_results_file_survives_a_line_cut_short(tmp_path):
    path = str(tmp_path / results.RESULTS)
    results.append(path, {"key": "a", "n": 1})
    with open(path, "ab") as f:
        f.write(b'{"key": "b", "n": ')  # a crash in the middle of a write
    results.append(path, {"key": "c", "n": 3})
    assert [r["key"] for r in results.read(path)] == ["a", "c"]
    assert set(results.done(str(tmp_path))) == {"a", "c"}


def test_report_best_setting_respects_the_motion_floor():
    groups = [{"settings": {"strength": 1.0}, "mean": 0.95, "motion": 0.002, "videos": 2},
              {"settings": {"strength": 0.6}, "mean": 0.90, "motion": 0.010, "videos": 2},
              {"settings": {"strength": 0.3}, "mean": 0.80, "motion": 0.020, "videos": 2}]
    assert report.best_setting(groups, 0.0)["settings"] == {"strength": 1.0}
    assert report.best_setting(groups, 0.005)["settings"] == {"strength": 0.6}
    assert report.best_setting(groups, 0.05) is None


def test_pilot_imports_without_comfyui():
    """engine.pilot and tools/pilot.py in a bare interpreter: no ComfyUI module is loaded."""
    import subprocess
    code = ("import sys; import engine.pilot.plan, engine.pilot.client, engine.pilot.dispatch, engine.pilot.score, "
            "engine.pilot.report, engine.pilot.results\n"
            "bad = [m for m in sys.modules if m == 'comfy' or m.startswith(('comfy.', 'comfy_api', 'folder_paths'))]\n"
            "assert not bad, bad\nprint('clean')")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, cwd=ROOT)
    assert proc.returncode == 0 and proc.stdout.strip() == "clean", proc.stderr
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "pilot.py"), "--help"], capture_output=True,
                          text=True, env=env, cwd="/")
    assert proc.returncode == 0 and "--server" in proc.stdout and "--min-motion" in proc.stdout, proc.stderr


def test_pilot_command_refuses_a_bad_plan_before_contacting_a_server(photos):
    import subprocess
    bad = write_plan(photos, grid={"Nope.strength": [1]})
    proc = subprocess.run([sys.executable, os.path.join(ROOT, "tools", "pilot.py"), bad, "--server",
                           "http://127.0.0.1:9", "--out", str(photos / "out")], capture_output=True, text=True)
    assert proc.returncode == 2 and "names no node" in proc.stderr, (proc.stdout, proc.stderr)
    assert not os.path.exists(photos / "out")
