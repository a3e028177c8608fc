// medmesh dashboard: live-update plumbing shared by every page (loaded after htmx).
// - shows whether the live connection is up, and resyncs after it comes back
// - refreshes the panel rows the server names (at most one request in flight)
// - announces new alerts to screen readers
// - local times for <time> elements
// - the idle sign-out, and telling the server the clinician is still at the keyboard
(function () {
  "use strict";

  var body = document.body;
  var csrf = body.dataset.csrf || "";
  var idleMs = (parseInt(body.dataset.idleSeconds || "900", 10) || 900) * 1000;
  var ACTIVITY_EVERY_MS = 60 * 1000;

  // --- local times ---------------------------------------------------------------------
  var sameDay = new Intl.DateTimeFormat(undefined, { hour: "2-digit", minute: "2-digit" });
  var otherDay = new Intl.DateTimeFormat(undefined, {
    day: "numeric", month: "short", hour: "2-digit", minute: "2-digit",
  });
  function localTime(moment) {
    var now = new Date();
    return moment.toDateString() === now.toDateString()
      ? sameDay.format(moment) : otherDay.format(moment);
  }
  function localizeTimes(root) {
    (root || document).querySelectorAll("time[datetime]").forEach(function (el) {
      var moment = new Date(el.getAttribute("datetime"));
      if (!isNaN(moment.getTime())) {
        el.textContent = localTime(moment);
        el.title = moment.toLocaleString();
      }
    });
  }

  // --- announcements ---------------------------------------------------------------------
  function announce(text, urgent) {
    var region = document.getElementById(urgent ? "announce-urgent" : "announce-polite");
    if (!region) return;
    region.textContent = "";
    // A short gap makes screen readers announce a repeat of the same words too.
    window.setTimeout(function () { region.textContent = text; }, 50);
  }
  function announceAlerts(alerts) {
    alerts.forEach(function (alert) {
      if (!alert || alert.status !== "open" || alert.trigger_count !== 1) return;
      var severity = alert.severity || "";
      var label = severity.charAt(0).toUpperCase() + severity.slice(1);
      var row = document.querySelector("#row-" + CSS.escape(alert.patient_id || "") + " .patient-name");
      var who = row ? " for " + row.textContent : "";
      announce("New " + label + " alert" + who + ": " + (alert.title || ""),
        severity === "critical" || severity === "urgent");
    });
  }

  // --- the panel's row refresh -----------------------------------------------------------
  var pendingRows = new Set();
  var rowsInFlight = false;
  function refreshRows() {
    if (rowsInFlight || pendingRows.size === 0) return;
    var ids = Array.from(pendingRows).filter(function (id) {
      return document.getElementById("row-" + id) !== null;
    });
    pendingRows.clear();
    if (ids.length === 0) return;
    rowsInFlight = true;
    htmx.ajax("GET", "/panel/rows?ids=" + ids.map(encodeURIComponent).join(","), {
      target: "#panel-body", swap: "none",
    }).finally(function () {
      rowsInFlight = false;
      refreshRows();
    });
  }

  // --- the live connection ---------------------------------------------------------------
  var opened = false;
  function setLive(state, text) {
    var status = document.getElementById("live-status");
    if (!status) return;
    status.classList.toggle("is-live", state === "live");
    status.classList.toggle("is-down", state === "down");
    status.querySelector(".text").textContent = text;
  }
  function parse(event) {
    try { return JSON.parse(event.data); } catch (e) { return null; }
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    var source = event.detail.source;
    setLive("live", "Live");
    source.addEventListener("rows", function (e) {
      var doc = parse(e);
      if (!doc) return;
      doc.data.patients.forEach(function (id) { pendingRows.add(id); });
      refreshRows();
    });
    source.addEventListener("alerts", function (e) {
      var doc = parse(e);
      if (doc && doc.data.alerts) announceAlerts(doc.data.alerts);
    });
    source.addEventListener("alert", function (e) {
      var doc = parse(e);
      if (doc && doc.data) announceAlerts([doc.data]);
    });
    if (opened) {
      // Back after a break: fetch what was missed.
      document.querySelectorAll("[hx-trigger*='medmesh:resync']").forEach(function (el) {
        htmx.trigger(el, "medmesh:resync");
      });
      document.dispatchEvent(new CustomEvent("medmesh:resync"));
    }
    opened = true;
  });
  document.addEventListener("htmx:sseError", function () { setLive("down", "Reconnecting…"); });

  // --- after htmx swaps --------------------------------------------------------------------
  document.addEventListener("htmx:afterSettle", function (event) {
    localizeTimes(event.detail.elt);
    var elt = event.detail.requestConfig && event.detail.requestConfig.elt;
    var focusId = elt && elt.dataset ? elt.dataset.focusAfter : null;
    if (focusId) {
      var target = document.getElementById(focusId);
      if (target) target.focus();
    }
  });
  document.addEventListener("htmx:oobAfterSwap", function (event) {
    var row = event.detail.target;
    if (row && row.tagName === "TR") {
      localizeTimes(row);
      row.classList.add("is-updated");
      window.setTimeout(function () { row.classList.remove("is-updated"); }, 1300);
    }
  });
  document.addEventListener("htmx:responseError", function (event) {
    var xhr = event.detail.xhr;
    if (xhr && xhr.status >= 400 && xhr.status !== 401) {
      announce(xhr.responseText || "That did not work; reload the page.", true);
    }
  });

  // --- idle sign-out ---------------------------------------------------------------------
  var signedIn = document.querySelector(".who") !== null;
  var lastInput = Date.now();
  var lastReport = Date.now();
  function onInput() {
    lastInput = Date.now();
    if (signedIn && lastInput - lastReport > ACTIVITY_EVERY_MS) {
      lastReport = lastInput;
      fetch("/session/activity", {
        method: "POST", credentials: "same-origin",
        headers: { "X-CSRF-Token": csrf, Accept: "application/json" },
      }).then(function (response) {
        if (response.status === 401) window.location.assign("/login?expired=1");
      }).catch(function () { /* offline: the next input tries again */ });
    }
  }
  ["keydown", "pointerdown", "wheel", "touchstart"].forEach(function (type) {
    window.addEventListener(type, onInput, { passive: true, capture: true });
  });
  if (signedIn) {
    window.setInterval(function () {
      if (Date.now() - lastInput > idleMs) window.location.assign("/login?expired=1");
    }, 5000);
  }

  // --- the calendar grid is laid out on the server: tell it the browser's time zone ------
  var browserZone = Intl.DateTimeFormat().resolvedOptions().timeZone;
  var calendarZone = document.getElementById("calendar-zone");
  if (calendarZone && browserZone && calendarZone.dataset.fromBrowser === "no" &&
      calendarZone.dataset.zone !== browserZone) {
    var url = new URL(window.location.href);
    url.searchParams.set("tz", browserZone);
    window.location.replace(url.toString());
  }
  document.querySelectorAll("input[data-default-zone]").forEach(function (input) {
    if (!input.value && browserZone) input.value = browserZone;
  });

  localizeTimes(document);
})();
