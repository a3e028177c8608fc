/* The patient panel's audible alarm for new critical alerts, and the number of patients with
   open alerts in the tab title. Browsers block sound until the person acts, so the alarm is
   off until they turn it on (the click is the gesture that unlocks audio); the choice is kept
   per browser (localStorage). The sound is synthesised (Web Audio): no file to fetch. */
(function () {
  "use strict";
  var KEY = "medmesh.alarm";
  var audio = null;
  var baseTitle = document.title;

  function enabled() {
    try { return window.localStorage.getItem(KEY) === "on"; } catch (e) { return false; }
  }
  function render() {
    var button = document.getElementById("alarm-toggle");
    if (!button) return;
    var on = enabled();
    button.hidden = false;
    button.setAttribute("aria-pressed", on ? "true" : "false");
    button.textContent = "Alarm sound: " + (on ? "on" : "off");
  }
  function context() {
    if (!audio) {
      var Context = window.AudioContext || window.webkitAudioContext;
      if (!Context) return null;
      audio = new Context();
    }
    if (audio.state === "suspended") audio.resume();
    return audio;
  }
  function sound() {
    var ctx = context();
    if (ctx) {
      [0, 0.35, 0.7].forEach(function (at) {
        var tone = ctx.createOscillator();
        var gain = ctx.createGain();
        tone.type = "square";
        tone.frequency.value = 880;
        gain.gain.value = 0.2;
        tone.connect(gain);
        gain.connect(ctx.destination);
        tone.start(ctx.currentTime + at);
        tone.stop(ctx.currentTime + at + 0.2);
      });
    }
    document.body.dataset.alarms = String(Number(document.body.dataset.alarms || "0") + 1);
  }
  function onAlerts(alerts) {
    var critical = alerts.some(function (a) {
      return a && a.severity === "critical" && a.status === "open" && a.trigger_count === 1;
    });
    if (critical && enabled()) sound();
  }
  function updateTitle() {
    var summary = document.getElementById("panel-summary");
    if (!summary) return;
    var count = Number(summary.dataset.alertPatients || "0");
    document.title = count > 0 ? "(" + count + ") " + baseTitle : baseTitle;
  }

  document.addEventListener("DOMContentLoaded", function () {
    render();
    updateTitle();
    var button = document.getElementById("alarm-toggle");
    if (!button) return;
    button.addEventListener("click", function () {
      var on = !enabled();
      try { window.localStorage.setItem(KEY, on ? "on" : "off"); } catch (e) { /* private mode */ }
      if (on) context();
      render();
    });
  });
  document.addEventListener("htmx:sseOpen", function (event) {
    var source = event.detail.source;
    ["alert", "alerts"].forEach(function (name) {
      source.addEventListener(name, function (e) {
        var doc;
        try { doc = JSON.parse(e.data); } catch (err) { return; }
        if (!doc || !doc.data) return;
        onAlerts(name === "alert" ? [doc.data] : (doc.data.alerts || []));
      });
    });
  });
  document.addEventListener("htmx:oobAfterSwap", updateTitle);
  document.addEventListener("htmx:afterSettle", updateTitle);
})();
