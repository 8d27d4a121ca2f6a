"""Node names, descriptions and tooltips in Japanese and Chinese, served by ComfyUI's custom node
i18n endpoint (GET /i18n, read from the pack's locales/<lang>/nodeDefs.json) for every node of
the pack, every input that has a tooltip and every output."""

import json
import os

import pytest

LANGS = ("ja", "zh")
ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


@pytest.fixture(scope="module")
def served(comfy_server):
    return comfy_server.get("/i18n"), comfy_server.get("/object_info")


def pack_nodes(object_info):
    nodes = {k: v for k, v in object_info.items() if k.startswith("StandIn_")}
    assert len(nodes) >= 8
    return nodes


def has_script(text, lang):
    """Japanese has kana or kanji, Chinese has CJK ideographs: not an English string left as is."""
    if lang == "ja":
        return any("\u3040" <= c <= "\u30ff" or "\u4e00" <= c <= "\u9fff" for c in text)
    return any("\u4e00" <= c <= "\u9fff" for c in text)


@pytest.mark.parametrize("lang", LANGS)
def test_i18n_serves_every_node_input_and_output_of_the_pack(served, lang):
    i18n, object_info = served
    defs = i18n[lang]["nodeDefs"]
    missing = []
    for node_id, info in pack_nodes(object_info).items():
        node = defs.get(node_id)
        if node is None:
            missing.append(node_id)
            continue
        for key in ("display_name", "description"):
            if not has_script(node.get(key, ""), lang):
                missing.append(f"{node_id}.{key}")
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, spec in inputs.items():
            if len(spec) > 1 and isinstance(spec[1], dict) and spec[1].get("tooltip"):
                if not has_script(node.get("inputs", {}).get(name, {}).get("tooltip", ""), lang):
                    missing.append(f"{node_id}.{name}")
        # Nothing translated for an input the node no longer has (a rename left behind).
        stale = set(node.get("inputs", {})) - set(inputs)
        missing += [f"{node_id}.{name} (no such input)" for name in stale]
        for index, tooltip in enumerate(info.get("output_tooltips", [])):
            if tooltip and not has_script(node.get("outputs", {}).get(str(index), {}).get("tooltip", ""), lang):
                missing.append(f"{node_id} output {index}")
        extra = set(node.get("outputs", {})) - {str(i) for i in range(len(info["output"]))}
        missing += [f"{node_id} output {k} (no such output)" for k in extra]
    assert not missing, f"{lang}: untranslated or stale: {missing}"


@pytest.mark.parametrize("lang", LANGS)
def test_translations_keep_the_figures_and_file_names_of_the_english(served, lang):
    """A tooltip's figures and file names (0.875, 4n+1, models/standin, ...) are facts: each
    translation carries the same ones as the English."""
    import re
    i18n, object_info = served
    token = re.compile(r"\d+\.\d+|4n\+1|[\w.-]+\.(?:onnx|safetensors|ckpt)|models/standin")
    for node_id, info in pack_nodes(object_info).items():
        inputs = {**info["input"].get("required", {}), **info["input"].get("optional", {})}
        for name, spec in inputs.items():
            english = spec[1].get("tooltip", "") if len(spec) > 1 and isinstance(spec[1], dict) else ""
            translated = i18n[lang]["nodeDefs"][node_id]["inputs"].get(name, {}).get("tooltip", "")
            assert set(token.findall(english)) <= set(token.findall(translated)), (node_id, name, translated)


I18N_JS = ("(() => { const v = document.getElementById('vue-app').__vue_app__;"
           " return v._context.provides[v.__VUE_I18N_SYMBOL__].global; })()")


@pytest.mark.parametrize("lang", LANGS)
def test_frontend_in_that_language_shows_the_packs_node_names(comfy_server, tmp_path, lang):
    """The real frontend (headless Chromium) with its Language set to Japanese or Chinese: a
    shipped workflow's Stand-In nodes are titled and described in that language, and the
    tooltips it shows on hover (looked up in its i18n messages) are the translations."""
    import frontend
    import workflows
    if frontend.chromium_path() is None:
        pytest.fail("Chromium is not installed (make test installs it where apt-get runs as root)")
    with open(os.path.join(ROOT, "locales", lang, "nodeDefs.json"), encoding="utf-8") as f:
        ours = json.load(f)
    settings = comfy_server.get("/settings")
    # No template browser or missing-models dialog over the canvas in the screenshot (to read
    # its Japanese or Chinese the machine needs a CJK font, e.g. Debian's fonts-noto-cjk).
    changes = {"Comfy.Locale": lang, "Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False}
    defaults = {"Comfy.Locale": "en", "Comfy.TutorialCompleted": False, "Comfy.Workflow.ShowMissingModelsWarning": True}
    before = {key: settings.get(key, defaults[key]) for key in changes}

    async def check(cdp):
        await cdp.wait_for(f"window.app.extensionManager?.setting?.get('Comfy.Locale') === '{lang}'")
        name = "standin_wan21_t2v_sample_video"
        payload = json.dumps(json.dumps(workflows.load_ui(name)))
        await cdp.evaluate(f"window.app.loadGraphData(JSON.parse({payload}), true, true, {json.dumps(name)})")
        shown = json.loads(await cdp.evaluate(
            "JSON.stringify(Object.fromEntries(window.app.graph.nodes.filter(n => n.type.startsWith('StandIn_'))"
            ".map(n => [n.type, {title: n.title, description: n.constructor.nodeData?.description}])))"))
        shown["tooltips"] = json.loads(await cdp.evaluate(
            f"(() => {{ const i18n = {I18N_JS}; return JSON.stringify(["
            " i18n.t('nodeDefs.StandIn_SampleVideo.inputs.width.tooltip'),"
            " i18n.t('nodeDefs.StandIn_EncodeReferenceFace.inputs.detector.tooltip'),"
            " i18n.t('nodeDefs.StandIn_EncodeReferenceFace.outputs.1.tooltip'),"
            " i18n.t('templateWorkflows.category.comfyui-standin')]); })()"))
        await cdp.screenshot(str(tmp_path / f"canvas_{lang}.png"))
        return shown

    for key, value in changes.items():
        comfy_server.post(f"/settings/{key}", value)
    try:
        with frontend.Frontend(comfy_server.url) as fe:
            shown = fe.run(check)
    finally:
        for key, value in before.items():
            comfy_server.post(f"/settings/{key}", value)
    tooltips = shown.pop("tooltips")
    assert {"StandIn_LoadIdentityAdapter", "StandIn_EncodeReferenceFace", "StandIn_ApplyRSACPM",
            "StandIn_SampleVideo"} <= set(shown)
    for node_type, seen in shown.items():
        assert seen["title"] == ours[node_type]["display_name"], (node_type, seen)
        assert seen["description"] == ours[node_type]["description"], (node_type, seen)
    with open(os.path.join(ROOT, "locales", lang, "main.json"), encoding="utf-8") as f:
        template_label = json.load(f)["templateWorkflows"]["category"]["comfyui-standin"]
    # ... and the template browser's label for the pack's templates
    assert tooltips == [ours["StandIn_SampleVideo"]["inputs"]["width"]["tooltip"],
                        ours["StandIn_EncodeReferenceFace"]["inputs"]["detector"]["tooltip"],
                        ours["StandIn_EncodeReferenceFace"]["outputs"]["1"]["tooltip"],
                        template_label]
    print("screenshot:", tmp_path / f"canvas_{lang}.png")
