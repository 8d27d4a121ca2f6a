"""The UI workflows on ComfyUI's real canvas (headless Chromium): each queues its API twin."""

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
