"""Warnings the user needs, shown on the node in the canvas (not only in the server console).

ComfyUI's progress text (``PromptServer.send_progress_text``, the binary websocket message the
frontend draws as a text box on the node; core's Get Image Size and the API nodes use it) is sent
to the client that queued the prompt, for the node that is running. Nodes also keep the text in
their UI output (``ui["text"]``), so /history holds it for API users.
"""

from __future__ import annotations

import logging

log = logging.getLogger(__name__)


def show_on_node(lines, title: str = "") -> bool:
    """Send ``lines`` as the running node's progress text; False when no server or no running node
    (a node called in-process)."""
    lines = [str(line) for line in lines if line]
    if not lines:
        return False
    try:
        from comfy_execution.utils import get_executing_context
        from server import PromptServer
    except ImportError:
        return False
    context = get_executing_context()
    server = getattr(PromptServer, "instance", None)
    if context is None or server is None:
        return False
    text = "\n".join(([title] if title else []) + [f"\u26a0 {line}" for line in lines])
    try:
        server.send_progress_text(text, context.node_id, getattr(server, "client_id", None))
    except Exception as e:  # a display problem must never fail the prompt
        log.debug("progress text not sent: %s", e)
        return False
    return True
