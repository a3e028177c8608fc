// The series viewer: server-rendered frames (web/imaging.py), one slice at a time.
// Wheel, arrow and page keys or the slider change the slice; drag changes window/level;
// shift-drag (or the middle button) pans; ctrl-wheel, + and - zoom. A frame the server
// cannot decode shows a placeholder, never a blank page.
(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("viewer-data").textContent);
  const viewport = document.getElementById("viewport");
  const img = document.getElementById("frame");
  const placeholder = document.getElementById("placeholder");
  const slider = document.getElementById("slice");
  const sliceText = document.getElementById("slice-text");
  const positionText = document.getElementById("position-text");
  const windowText = document.getElementById("window-text");
  const zoomText = document.getElementById("zoom-text");
  const slices = data.slices;
  const state = { index: Math.floor(slices.length / 2), window: null, shown: null, zoom: 1, x: 0, y: 0 };
  let pending = null;
  let objectUrl = null;

  slider.max = String(slices.length);

  function frameUrl() {
    const s = slices[state.index];
    const params = new URLSearchParams({ frame: String(s.frame) });
    if (state.window) params.set("window", state.window.center.toFixed(1) + "," + state.window.width.toFixed(1));
    return "/patients/" + data.patient + "/imaging/series/" + data.series + "/frames/" + s.instance + "?" + params;
  }

  function describe() {
    const s = slices[state.index];
    sliceText.textContent = "Slice " + (state.index + 1) + " / " + slices.length;
    positionText.textContent = s.position === null ? "" : "Position " + s.position.toFixed(1) + " mm";
    const w = state.window || state.shown;
    windowText.textContent = w ? "W " + Math.round(w.width) + " · L " + Math.round(w.center) : "";
    zoomText.textContent = state.zoom === 1 ? "" : "Zoom " + state.zoom.toFixed(1) + "×";
    slider.value = String(state.index + 1);
  }

  function transform() {
    img.style.transform = "translate(" + state.x + "px," + state.y + "px) scale(" + state.zoom + ")";
    describe();
  }

  async function load() {
    const url = frameUrl();
    pending = url;
    describe();
    let response;
    try {
      response = await fetch(url, { credentials: "same-origin" });
    } catch (error) {
      return;
    }
    if (pending !== url) return; // a newer slice or window was asked for meanwhile
    if (!response.ok) {
      img.hidden = true;
      placeholder.hidden = false;
      placeholder.textContent = response.status === 415
        ? "This image cannot be shown here: its compression is not supported by this server."
        : "This image could not be loaded (" + response.status + ").";
      viewport.dataset.state = "placeholder";
      return;
    }
    const center = parseFloat(response.headers.get("X-Window-Center"));
    const width = parseFloat(response.headers.get("X-Window-Width"));
    if (!Number.isNaN(center) && !Number.isNaN(width)) state.shown = { center: center, width: width };
    const blob = await response.blob();
    if (objectUrl) URL.revokeObjectURL(objectUrl);
    objectUrl = URL.createObjectURL(blob);
    img.src = objectUrl;
    img.hidden = false;
    placeholder.hidden = true;
    viewport.dataset.state = "loaded";
    viewport.dataset.index = String(state.index);
    describe();
  }

  let timer = null;
  function loadSoon() {
    clearTimeout(timer);
    timer = setTimeout(load, 60);
  }

  function go(delta) {
    const next = Math.max(0, Math.min(slices.length - 1, state.index + delta));
    if (next !== state.index) {
      state.index = next;
      loadSoon();
    }
  }

  function zoom(factor) {
    state.zoom = Math.max(0.5, Math.min(8, state.zoom * factor));
    transform();
  }

  viewport.addEventListener("wheel", function (event) {
    event.preventDefault();
    if (event.ctrlKey) zoom(event.deltaY < 0 ? 1.2 : 1 / 1.2);
    else go(event.deltaY > 0 ? 1 : -1);
  }, { passive: false });

  viewport.addEventListener("keydown", function (event) {
    const keys = { ArrowDown: 1, ArrowRight: 1, ArrowUp: -1, ArrowLeft: -1, PageDown: 10, PageUp: -10 };
    if (event.key in keys) { event.preventDefault(); go(keys[event.key]); }
    else if (event.key === "Home") { event.preventDefault(); go(-slices.length); }
    else if (event.key === "End") { event.preventDefault(); go(slices.length); }
    else if (event.key === "+" || event.key === "=") zoom(1.2);
    else if (event.key === "-") zoom(1 / 1.2);
  });

  let drag = null;
  viewport.addEventListener("pointerdown", function (event) {
    viewport.focus();
    viewport.setPointerCapture(event.pointerId);
    const pan = event.shiftKey || event.button === 1;
    const start = state.window || state.shown || { center: 128, width: 256 };
    drag = { pan: pan, x: event.clientX, y: event.clientY, ox: state.x, oy: state.y, window: start };
  });
  viewport.addEventListener("pointermove", function (event) {
    if (!drag) return;
    const dx = event.clientX - drag.x, dy = event.clientY - drag.y;
    if (drag.pan) {
      state.x = drag.ox + dx;
      state.y = drag.oy + dy;
      transform();
    } else {
      // Right widens the window, down raises the level (the convention of most viewers).
      const scale = Math.max(drag.window.width / 256, 1);
      state.window = {
        center: drag.window.center + dy * scale,
        width: Math.max(1, drag.window.width + dx * scale),
      };
      loadSoon();
    }
  });
  function endDrag() { drag = null; }
  viewport.addEventListener("pointerup", endDrag);
  viewport.addEventListener("pointercancel", endDrag);

  slider.addEventListener("input", function () {
    state.index = Number(slider.value) - 1;
    loadSoon();
  });

  document.getElementById("zoom-in").addEventListener("click", function () { zoom(1.2); });
  document.getElementById("zoom-out").addEventListener("click", function () { zoom(1 / 1.2); });
  document.getElementById("reset").addEventListener("click", function () {
    state.zoom = 1; state.x = 0; state.y = 0; state.window = null;
    transform();
    load();
  });
  const presets = document.getElementById("presets");
  data.presets.forEach(function (preset) {
    const button = document.createElement("button");
    button.type = "button";
    button.textContent = preset.label;
    button.dataset.preset = preset.label;
    button.addEventListener("click", function () {
      state.window = { center: preset.center, width: preset.width };
      load();
    });
    presets.appendChild(button);
  });
  document.querySelector('[data-preset="auto"]').addEventListener("click", function () {
    state.window = null;
    load();
  });

  // Thumbnails elsewhere fall back to text; here the first frame loads at once.
  load();
})();
