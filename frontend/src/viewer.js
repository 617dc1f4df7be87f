// The object page's 3D viewer: <model-viewer> (three.js) loading the level of detail that suits
// the device, with lighting, full screen and a switch to full detail.
import "@google/model-viewer";

const ModelViewer = customElements.get("model-viewer");
const here = new URL("./", import.meta.url);
ModelViewer.dracoDecoderLocation = new URL("draco/", here).href;
ModelViewer.meshoptDecoderLocation = new URL("meshopt-decoder.js", here).href;

// Phones, slow or metered connections and small memories get the light level; the rest the
// medium one. Full detail is loaded only when asked for.
export function suitedLevel() {
  const connection = navigator.connection || {};
  if (connection.saveData || /(^|-)2g$/.test(connection.effectiveType || "")) return "low";
  if ((navigator.deviceMemory || 8) <= 2) return "low";
  if (window.matchMedia("(max-width: 700px)").matches) return "low";
  return "medium";
}

function setUp(figure) {
  const viewer = figure.querySelector("model-viewer");
  const status = figure.querySelector("[data-status]");
  const template = figure.dataset.lodUrl; // …/lod/{level}?compression=…
  const say = (text) => {
    if (status) status.textContent = text;
  };
  const load = (level) => {
    figure.dataset.level = level;
    say(figure.dataset.msgLoading || "Loading…");
    viewer.src = template.replace("{level}", level);
  };
  viewer.addEventListener("load", () => {
    figure.dataset.loaded = figure.dataset.level;
    say(figure.dataset.msgLoaded || "");
  });
  viewer.addEventListener("error", () => {
    figure.dataset.failed = "true";
    say(figure.dataset.msgFailed || "The model could not be shown.");
  });
  let announced = 0;
  viewer.addEventListener("progress", (event) => {
    // Spoken at each quarter only: a screen reader must not recite every percent.
    const quarter = Math.floor(((event.detail && event.detail.totalProgress) || 0) * 4);
    if (quarter > announced && quarter < 4) {
      announced = quarter;
      say(`${figure.dataset.msgLoading || "Loading…"} ${quarter * 25} %`);
    }
  });

  const exposure = figure.querySelector("[data-exposure]");
  exposure?.addEventListener("input", () => {
    viewer.exposure = Number(exposure.value);
  });
  const environment = figure.querySelector("[data-environment]");
  environment?.addEventListener("change", () => {
    viewer.environmentImage = environment.value;
  });
  const shadow = figure.querySelector("[data-shadow]");
  shadow?.addEventListener("change", () => {
    viewer.shadowIntensity = shadow.checked ? 1 : 0;
  });
  figure.querySelector("[data-fullscreen]")?.addEventListener("click", () => {
    if (document.fullscreenElement) document.exitFullscreen();
    else figure.requestFullscreen?.();
  });
  figure.querySelector("[data-reset]")?.addEventListener("click", () => {
    viewer.cameraOrbit = "auto auto auto";
    viewer.fieldOfView = "auto";
    viewer.jumpCameraToGoal();
  });
  const full = figure.querySelector("[data-full-detail]");
  full?.addEventListener("click", () => {
    full.disabled = true;
    load("high");
  });
  load(figure.dataset.level || suitedLevel());
}

document.querySelectorAll("[data-viewer]").forEach(setUp);
