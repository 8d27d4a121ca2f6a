// The pack's Japanese and Chinese node names and tooltips (locales/<lang>/nodeDefs.json, served
// by ComfyUI at /i18n) on frontends that drop them. The frontend merges custom node translations
// before it lazily loads a non-English language, and loading the language replaced them
// (fixed in ComfyUI_frontend PR #7214; the 1.32 frontend of ComfyUI 0.3.75 still has it). Before
// the nodes are registered, this merges the pack's translations again if they are missing; with a
// frontend that kept them it does nothing.
import { app } from "../../scripts/app.js";
import { api } from "../../scripts/api.js";

const PREFIX = "StandIn_";

function globalI18n() {
  const vue = document.getElementById("vue-app")?.__vue_app__;
  const key = vue?.__VUE_I18N_SYMBOL__;
  return key ? vue._context?.provides?.[key]?.global : undefined;
}

function currentLocale(i18n) {
  const locale = i18n.locale;
  return String(typeof locale === "object" && locale !== null ? locale.value : locale);
}

async function mergeMissing() {
  const i18n = globalI18n();
  if (!i18n?.mergeLocaleMessage || !i18n.te) return;
  const locale = currentLocale(i18n);
  if (!locale || locale === "en") return;
  // Wait (briefly) for the frontend's own messages of this language, or they would replace ours.
  for (let i = 0; i < 50 && !i18n.te("nodeDefs.KSampler.display_name", locale); i++) {
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  const served = await (await api.fetchApi("/i18n")).json();
  const defs = served?.[locale]?.nodeDefs ?? {};
  const missing = {};
  for (const [id, def] of Object.entries(defs)) {
    if (id.startsWith(PREFIX) && !i18n.te(`nodeDefs.${id}.display_name`, locale)) missing[id] = def;
  }
  if (Object.keys(missing).length) i18n.mergeLocaleMessage(locale, { nodeDefs: missing });
  // The template browser's label for this pack's templates (locales/<lang>/main.json).
  const categories = served?.[locale]?.templateWorkflows?.category ?? {};
  const missingCategories = Object.fromEntries(
    Object.entries(categories).filter(([module]) => !i18n.te(`templateWorkflows.category.${module}`, locale)));
  if (Object.keys(missingCategories).length) {
    i18n.mergeLocaleMessage(locale, { templateWorkflows: { category: missingCategories } });
  }
}

app.registerExtension({
  name: "StandIn.Locales",
  async init() {
    try {
      await mergeMissing();
    } catch (error) {
      console.warn("Stand-In: could not restore the node translations", error);
    }
  },
});
