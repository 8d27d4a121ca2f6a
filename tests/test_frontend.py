"""The UI workflows on ComfyUI's real canvas (headless Chromium): each queues its API twin."""

import asyncio
import os

import pytest

import frontend
import workflows

pytestmark = pytest.mark.skipif(frontend.chromium_path() is None,
                                reason="Chromium is not installed (make test installs it where apt-get runs as root)")


def test_canvas_queues_exactly_the_api_twin(comfy_server, tmp_path):
    async def check(cdp):
        got = {}
        for name in workflows.ui_names():
            got[name] = await cdp.queued_prompt(workflows.load_ui(name), name)
        await cdp.screenshot(str(tmp_path / "canvas.png"))
        return got

    with frontend.Frontend(comfy_server.url) as fe:
        queued = fe.run(check)
    assert sorted(queued) == workflows.api_names()
    # Compared as the server runs them: a newer canvas also queues inputs its ComfyUI added
    # since the workflow was saved (e.g. CreateVideo's bit_depth), at their defaults.
    info = comfy_server.get("/object_info")
    for name, prompt in queued.items():
        assert workflows.with_defaults(prompt, info) == workflows.with_defaults(workflows.load_api(name), info), name
    assert os.path.getsize(tmp_path / "canvas.png") > 10_000


LOADERS = {"UNETLoader": "unet_name", "LoraLoaderModelOnly": "lora_name", "CLIPLoader": "clip_name",
           "VAELoader": "vae_name", "StandIn_LoadIdentityAdapter": "adapter_name"}
# What the frontend draws over the canvas at 1920x1080: the side bar (59 px) and, at the top,
# the tab bar, the workflow name and the Run bar.
SIDEBAR_RIGHT, TOP_BARS_BOTTOM = 59, 125

PAGE_GRAPH = """JSON.stringify({
  ds: {scale: app.canvas.ds.scale, offset: Array.from(app.canvas.ds.offset)},
  nodes: app.graph.nodes.map(n => ({id: n.id, type: n.type, title: n.title, rect: Array.from(n.boundingRect),
      models: n.properties?.models ?? null, widgets: Object.fromEntries((n.widgets ?? []).map(w => [w.name, w.value])),
      missing: !LiteGraph.registered_node_types[n.type]})),
  groups: app.graph.groups.map(g => ({title: g.title, rect: Array.from(g.boundingRect ?? g._bounding)})),
})"""


def _overlap(a, b) -> bool:
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


def _inside(inner, outer) -> bool:
    return (inner[0] >= outer[0] and inner[1] >= outer[1] and inner[0] + inner[2] <= outer[0] + outer[2]
            and inner[1] + inner[3] <= outer[1] + outer[3])


def test_every_template_on_the_canvas_before_and_after_a_run(comfy_server, tmp_path):
    """Each template on the real canvas of a 1920x1080 window: no missing node; the view opens
    on the whole graph, clear of the side bar and the top bars, at a zoom where the canvas still
    draws text; every loader carries its file in `models` metadata (name, URL, folder, as the
    weights manifest says). Then it runs with tiny models, queued for this page so its outputs
    show on the nodes (reference preview, video previews, the loaded photo): measured from the
    node bounds in the page, no two nodes overlap, every node sits inside its group and no two
    groups overlap."""
    import json as _json

    import tiny_models
    from conftest import FACE
    with open(os.path.join(workflows.ROOT, "weights_manifest.json"), encoding="utf-8") as f:
        manifest = {e["name"]: e for e in _json.load(f)["files"]}

    async def check(cdp):
        seen = {}
        for name in workflows.ui_names():
            payload = _json.dumps(_json.dumps(workflows.load_ui(name)))
            await cdp.evaluate(f"window.app.loadGraphData(JSON.parse({payload}), true, true, {_json.dumps(name)})")
            await cdp.screenshot(str(tmp_path / f"{name}_opened.png"))
            opened = _json.loads(await cdp.evaluate(PAGE_GRAPH))
            tiny = tiny_models.tiny_variant(workflows.load_api(name), dit=tiny_models.TINY_DIT, adapter=tiny_models.TINY_ADAPTER,
                                            vae=tiny_models.TINY_VAE, image=FACE, seed=5)
            body = _json.dumps({"prompt": tiny})
            prompt_id = await cdp.evaluate(
                "(async () => { const r = await fetch('/prompt', {method: 'POST', headers: {'Content-Type': 'application/json'},"
                f" body: JSON.stringify(Object.assign({body}, {{client_id: window.app.api.clientId}}))}});"
                " return (await r.json()).prompt_id; })()")
            await cdp.wait_for(f"(async () => {{ const h = await (await fetch('/history/{prompt_id}')).json();"
                               f" return h['{prompt_id}']?.status?.completed === true; }})()", timeout=300)
            # The photo the user loads: its preview grows Load Image as the outputs grow theirs.
            await cdp.evaluate("(() => { for (const n of app.graph.nodes.filter(n => n.type === 'LoadImage')) {"
                               f" const w = n.widgets.find(w => w.name === 'image'); w.value = {_json.dumps(FACE)};"
                               f" w.callback?.({_json.dumps(FACE)}); }} }})()")
            await asyncio.sleep(3)
            await cdp.evaluate("app.canvas.setDirty(true, true)")
            await cdp.screenshot(str(tmp_path / f"{name}_after_run.png"))
            after = _json.loads(await cdp.evaluate(PAGE_GRAPH))
            history = comfy_server.get(f"/history/{prompt_id}")[prompt_id]
            seen[name] = (opened, after, history["status"]["status_str"],
                          {nid for nid, out in history["outputs"].items() if out.get("images")})
        return seen

    settings = comfy_server.get("/settings")
    # No template browser over the canvas, no missing-models dialog (the models are tiny ones),
    # no minimap over the screenshots (they become the templates' thumbnails).
    changes = {"Comfy.TutorialCompleted": True, "Comfy.Workflow.ShowMissingModelsWarning": False,
               "Comfy.Minimap.Visible": False}
    before = {key: settings.get(key, not value) for key, value in changes.items()}
    for key, value in changes.items():
        comfy_server.post(f"/settings/{key}", value)
    try:
        with frontend.Frontend(comfy_server.url, viewport=(1920, 1080)) as fe:
            seen = fe.run(check, timeout=1200)
    finally:
        for key, value in before.items():
            comfy_server.post(f"/settings/{key}", value)
    assert sorted(seen) == workflows.ui_names() and len(seen) >= 9
    for name, (opened, after, status, shown) in seen.items():
        assert status == "success", name
        assert [n["type"] for n in opened["nodes"] if n["missing"]] == [], name
        scale, (ox, oy) = opened["ds"]["scale"], opened["ds"]["offset"]
        assert scale >= 0.6, (name, scale)
        for item in opened["nodes"] + opened["groups"]:
            x, y, w, h = item["rect"]
            left, top, right, bottom = (x + ox) * scale, (y + oy) * scale, (x + w + ox) * scale, (y + h + oy) * scale
            assert left >= SIDEBAR_RIGHT and top >= TOP_BARS_BOTTOM and right <= 1920 and bottom <= 1080, \
                (name, item.get("title"), (left, top, right, bottom))
        for node in opened["nodes"]:
            if node["type"] in LOADERS:
                file = node["widgets"][LOADERS[node["type"]]]
                entry = manifest[file]
                assert node["models"] == [{"name": file, "url": entry["url"], "directory": entry["folder"]}], (name, node)
                assert node["models"][0]["url"].startswith("https://")
        assert shown, (name, "no image output came back")
        nodes, groups = after["nodes"], after["groups"]
        for i, a in enumerate(nodes):
            for b in nodes[i + 1:]:
                assert not _overlap(a["rect"], b["rect"]), (name, a["title"], a["rect"], b["title"], b["rect"])
            homes = [g["title"] for g in groups if _inside(a["rect"], g["rect"])]
            assert len(homes) == 1 or (a["type"] == "MarkdownNote" and not homes), (name, a["title"], a["rect"], homes)
        for i, a in enumerate(groups):
            for b in groups[i + 1:]:
                assert not _overlap(a["rect"], b["rect"]), (name, a["title"], b["title"])
        print("screenshots:", tmp_path / f"{name}_opened.png", tmp_path / f"{name}_after_run.png")
