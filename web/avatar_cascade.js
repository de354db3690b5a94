// Avatar Cascade: show each node's warnings (no lip-sync, Director fell back to rules, a model used off its
// trained regime, keyframes not lifted) on the node itself, in the graph. The nodes send them in their
// "ui" output as `avatar_warnings` (ComfyUI's stock frontend shows images and videos from "ui", not text).
import { app } from "../../scripts/app.js";
import { ComfyWidgets } from "../../scripts/widgets.js";

const WIDGET = "avatar_warnings";
const WARN_COLOR = "#7a4a00";
const WARN_BGCOLOR = "#4a2d00";

function showWarnings(node, lines) {
  let widget = node.widgets?.find((w) => w.name === WIDGET);
  if (!lines || lines.length === 0) {
    if (widget) widget.value = "";
    return;
  }
  if (!widget) {
    widget = ComfyWidgets["STRING"](node, WIDGET, ["STRING", { multiline: true }], app).widget;
    widget.inputEl.readOnly = true;
    widget.inputEl.style.opacity = 0.9;
    widget.serialize = false;  // never saved into the workflow or sent as an input
  }
  widget.value = lines.map((l) => "⚠ " + l).join("\n");
  node.color = WARN_COLOR;
  node.bgcolor = WARN_BGCOLOR;
  node.setSize?.(node.computeSize());
  app.graph?.setDirtyCanvas(true, true);
}

app.registerExtension({
  name: "AvatarCascade.Warnings",
  async beforeRegisterNodeDef(nodeType, nodeData) {
    if (!nodeData?.name?.startsWith("AvatarCascade")) return;
    const onExecuted = nodeType.prototype.onExecuted;
    nodeType.prototype.onExecuted = function (message) {
      onExecuted?.apply(this, arguments);
      showWarnings(this, message?.[WIDGET]);
    };
  },
});
