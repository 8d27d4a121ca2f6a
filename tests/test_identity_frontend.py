"""Identity Similarity on ComfyUI's real canvas (headless Chromium): the figures appear as text
on the node after a run, and the text box is not part of the queued prompt."""

import json

import pytest

import conftest
import frontend

pytestmark = pytest.mark.skipif(frontend.chromium_path() is None,
                                reason="Chromium is not installed (make test installs it where apt-get runs as root)")

NODE = "StandIn_IdentitySimilarity"


def test_figures_show_on_the_node_after_a_run(comfy_server, tmp_path):
    async def check(cdp):
        await cdp.wait_for(f"!!window.LiteGraph && !!LiteGraph.registered_node_types[{json.dumps(NODE)}]")
        await cdp.evaluate(
            "(() => {"
            " const g = window.app.graph; g.clear();"
            " const load = LiteGraph.createNode('LoadImage'); g.add(load);"
            f" load.widgets.find(w => w.name === 'image').value = {json.dumps(conftest.FACE)};"
            f" const sim = LiteGraph.createNode({json.dumps(NODE)}); g.add(sim); sim.pos = [400, 0];"
            " sim.widgets.find(w => w.name === 'embedder').value = 'dlib';"
            " load.connect(0, sim, sim.findInputSlot('images'));"
            " load.connect(0, sim, sim.findInputSlot('reference_image'));"
            " window.__sim = sim; })()")
        before = await cdp.evaluate("window.__sim.widgets.find(w => w.name === 'figures').value")
        prompt = json.loads(await cdp.evaluate(
            "(async () => JSON.stringify((await window.app.graphToPrompt()).output))()"))
        await cdp.evaluate("(async () => { await window.app.queuePrompt(0, 1); })()")
        await cdp.wait_for("window.__sim.widgets.find(w => w.name === 'figures').value.includes('faces found')",
                           timeout=120)
        after = await cdp.evaluate("window.__sim.widgets.find(w => w.name === 'figures').value")
        await cdp.evaluate("(() => { const s = window.__sim; s.size = [640, 760];"
                           " window.app.canvas.ds.offset = [40, 40]; window.app.canvas.ds.scale = 1;"
                           " window.app.graph.setDirtyCanvas(true, true); })()")
        # The frontend opens its template browser on a first visit: close it to see the canvas.
        await cdp.evaluate("document.querySelectorAll('.p-dialog-mask').forEach(e => e.remove())")
        await cdp.screenshot(str(tmp_path / "identity_node.png"))
        return before, prompt, after

    with frontend.Frontend(comfy_server.url) as fe:
        before, prompt, after = fe.run(check)
    assert before == ""
    sim = next(n for n in prompt.values() if n["class_type"] == NODE)
    assert "figures" not in sim["inputs"] and sim["inputs"]["embedder"] == "dlib"
    # The photo against itself: one frame, one face, similarity 1.
    assert "faces found: 1/1 frames (100%)" in after and "mean 1.000" in after, after
    assert (tmp_path / "identity_node.png").stat().st_size > 10_000
