// Clinician time from real activity: while this page is visible and the person has used it in
// the last minute, tell the server every 30 s; the server extends the running entry and starts
// a new one after the idle cut-off (docs/visits.md). Nothing is sent while idle or hidden.
(() => {
  "use strict";
  const script = document.currentScript;
  const patient = script && script.dataset.patient;
  if (!patient) return;
  const csrf = document.body.dataset.csrf;
  let lastUsed = Date.now();
  const used = () => { lastUsed = Date.now(); };
  for (const name of ["pointerdown", "keydown", "wheel", "touchstart", "mousemove"]) {
    window.addEventListener(name, used, { passive: true });
  }
  const tell = () => {
    if (document.visibilityState !== "visible" || Date.now() - lastUsed > 60000) return;
    fetch("/rpm/activity/" + encodeURIComponent(patient), {
      method: "POST",
      headers: { "X-CSRF-Token": csrf },
      credentials: "same-origin",
    }).catch(() => {});
  };
  tell();
  setInterval(tell, 30000);
})();
