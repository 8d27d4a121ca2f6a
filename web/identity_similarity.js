// Identity Similarity: show the node's figures as text on the canvas, as core's Preview Any
// does for its input. The node sends them as ui.text; the chart comes as a preview image.
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const NODE = "StandIn_IdentitySimilarity";

app.registerExtension({
  name: "StandIn.IdentitySimilarity",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (nodeData.name !== NODE) return;
    const onNodeCreated = nodeType.prototype.onNodeCreated;
    nodeType.prototype.onNodeCreated = function () {
      onNodeCreated?.apply(this, arguments);
      const widget = ComfyWidgets.STRING(this, "figures", ["STRING", { multiline: true }], app).widget;
      // Output only: kept out of the saved workflow (serialize) and of the queued prompt (options).
      widget.serialize = false;
      widget.options = { ...(widget.options ?? {}), serialize: false };
      if (widget.inputEl) {
        widget.inputEl.readOnly = true;
        widget.inputEl.placeholder = "Figures appear here after a run.";
      }
    };
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      const widget = this.widgets?.find((w) => w.name === "figures");
      const text = message?.text;
      if (widget && text != null) widget.value = Array.isArray(text) ? text.join("\n") : String(text);
    };
  },
});
