// medmesh patient page: one uPlot chart per vital sign, fed by the server's (downsampled)
// series, with readings appended live when the page's event stream says some arrived.
(function () {
  "use strict";

  var config = JSON.parse(document.getElementById("chart-data").textContent);
  var COLOURS = {
    hr: "#b3261e", spo2: "#0b5cad", sys: "#6a1b9a", dia: "#00796b",
    temp: "#c43e00", bg: "#2e7d32", cgm: "#5d4037", rr: "#37474f",
  };
  var DASHES = { dia: [6, 4], cgm: [6, 4] };
  var charts = {};  // vital key -> {vital, plot, data}
  var since = config.now;  // server time of the last fetch: readings received after it are new

  function hexToRgba(hex, alpha) {
    var n = parseInt(hex.slice(1), 16);
    return "rgba(" + (n >> 16) + "," + ((n >> 8) & 255) + "," + (n & 255) + "," + alpha + ")";
  }

  // uPlot wants [x, s1, s2, ...]; per medmesh series: mean, low, high.
  function columns(vital, data) {
    var cols = [data.x];
    vital.series.forEach(function (s) {
      var d = data.series[s.key];
      cols.push(d.mean, d.low, d.high);
    });
    return cols;
  }

  function options(vital, width, showExtremes) {
    var series = [{}];
    var bands = [];
    vital.series.forEach(function (s, i) {
      var colour = COLOURS[s.key] || "#1b2430";
      var base = 1 + i * 3;
      series.push({
        label: s.label, stroke: colour, width: 2, dash: DASHES[s.key], spanGaps: true,
        value: function (u, v) { return v == null ? "–" : v.toFixed(vital.decimals) + " " + vital.unit; },
        points: { show: function (u) { return u.data[0].length < 120; }, size: 5, fill: colour },
      });
      // The lowest/highest lines matter only when a point stands for several readings.
      var extreme = showExtremes ? hexToRgba(colour, 0.35) : "transparent";
      series.push({ label: s.label + " lowest", stroke: extreme, width: 1, spanGaps: true, points: { show: false } });
      series.push({ label: s.label + " highest", stroke: extreme, width: 1, spanGaps: true, points: { show: false } });
      bands.push({ series: [base + 2, base + 1], fill: hexToRgba(colour, 0.12) });
    });
    return {
      width: width, height: 220, series: series, bands: bands,
      legend: { live: true, markers: { width: 2 } },
      cursor: { drag: { x: false, y: false } },
      hooks: { init: [function (u) {
        // Keep the legend to the means: hide the rows of the lowest/highest series.
        u.root.querySelectorAll(".u-legend .u-series").forEach(function (row, i) {
          if (i > 0 && (i - 1) % 3 !== 0) row.style.display = "none";
        });
      }] },
      scales: {
        x: { time: true, range: function () { return xRange(); } },
        y: { range: yRange },
      },
      axes: [
        { stroke: "#4a5563", grid: { stroke: "#e6eaee" }, ticks: { stroke: "#d3dae1" } },
        { stroke: "#4a5563", grid: { stroke: "#e6eaee" }, ticks: { stroke: "#d3dae1" }, size: 50,
          label: vital.unit, labelSize: 18 },
      ],
    };
  }

  function yRange(u, min, max) {
    // Pad around the data, and never squash a flat series into a hair or stretch it to zero.
    if (min == null || max == null) return [0, 1];
    var pad = Math.max((max - min) * 0.15, Math.abs(max) * 0.02, 1);
    return [Math.floor(min - pad), Math.ceil(max + pad)];
  }

  var latestServerNow = config.now;
  function xRange() { return [latestServerNow - config.rangeSeconds, latestServerNow]; }

  function showLatest(entry) {
    var data = entry.data, vital = entry.vital;
    var x = data.x;
    for (var i = x.length - 1; i >= 0; i--) {
      var parts = [];
      vital.series.forEach(function (s) {
        var v = data.series[s.key].mean[i];
        if (v != null) parts.push(v.toFixed(vital.decimals));
      });
      if (parts.length) {
        var box = document.getElementById("latest-" + vital.key);
        var at = new Date(x[i] * 1000);
        box.innerHTML = "";
        var value = document.createElement("span");
        value.className = "latest-value";
        value.textContent = vital.key === "glucose" ? parts[parts.length - 1] : parts.join("/");
        var unit = document.createElement("span");
        unit.className = "unit";
        unit.textContent = " " + vital.unit;
        var time = document.createElement("time");
        time.className = "latest-time";
        time.setAttribute("datetime", at.toISOString());
        time.textContent = at.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
        box.append(value, unit, time);
        return;
      }
    }
  }

  function merge(entry, fresh) {
    // Readings may arrive late (a device uploading a backlog), and the server sends some
    // again (its window overlaps the last one): keep one row per time, in time order.
    var keys = entry.vital.series.map(function (s) { return s.key; });
    var rows = new Map();
    function take(d) {
      d.x.forEach(function (t, i) {
        var row = rows.get(t) || { x: t };
        keys.forEach(function (k) {
          if (d.series[k].mean[i] != null || !row[k]) {
            row[k] = [d.series[k].mean[i], d.series[k].low[i], d.series[k].high[i]];
          }
        });
        rows.set(t, row);
      });
    }
    take(entry.data);
    take(fresh);
    var start = latestServerNow - config.rangeSeconds;
    var sorted = Array.from(rows.values())
      .filter(function (r) { return r.x >= start; })
      .sort(function (a, b) { return a.x - b.x; });
    var merged = { x: sorted.map(function (r) { return r.x; }), series: {} };
    keys.forEach(function (k) {
      merged.series[k] = {
        mean: sorted.map(function (r) { return r[k][0]; }),
        low: sorted.map(function (r) { return r[k][1]; }),
        high: sorted.map(function (r) { return r[k][2]; }),
      };
    });
    entry.data = merged;
  }

  function render(entry) {
    entry.plot.setData(columns(entry.vital, entry.data));
    var figure = document.getElementById("chart-" + entry.vital.key);
    figure.dataset.points = String(entry.data.x.length);
  }

  // --- live appends: at most one request in flight, one more queued ------------------------
  var inFlight = false, again = false;
  function fetchNew() {
    if (inFlight) { again = true; return; }
    inFlight = true;
    var url = "/patients/" + encodeURIComponent(config.patient) + "/series?range=" +
      encodeURIComponent(config.range) + "&since=" + since;
    fetch(url, { credentials: "same-origin", headers: { Accept: "application/json" } })
      .then(function (response) {
        if (response.status === 401) { window.location.assign("/login?expired=1"); return null; }
        return response.ok ? response.json() : null;
      })
      .then(function (doc) {
        if (!doc) return;
        since = doc.now;
        latestServerNow = doc.now;
        Object.keys(doc.vitals).forEach(function (key) {
          var entry = charts[key], fresh = doc.vitals[key];
          if (!entry) return;
          if (fresh.x.length) {
            merge(entry, fresh);
            showLatest(entry);
          }
          render(entry);
        });
      })
      .catch(function () { /* the next event or reconnect tries again */ })
      .finally(function () {
        inFlight = false;
        if (again) { again = false; fetchNew(); }
      });
  }

  function build() {
    config.vitals.forEach(function (vital) {
      var figure = document.getElementById("chart-" + vital.key);
      var target = figure.querySelector(".plot");
      var entry = { vital: vital, data: vital.data };
      var width = target.clientWidth || 480;
      entry.plot = new uPlot(options(vital, width, config.downsampled), columns(vital, vital.data), target);
      charts[vital.key] = entry;
    });
    var resize = new ResizeObserver(function (items) {
      items.forEach(function (item) {
        var key = item.target.closest("figure").dataset.vital;
        var entry = charts[key];
        var width = Math.floor(item.contentRect.width);
        if (entry && width > 0 && width !== entry.plot.width) entry.plot.setSize({ width: width, height: 220 });
      });
    });
    document.querySelectorAll(".chart-card .plot").forEach(function (el) { resize.observe(el); });
    window.medmeshCharts = charts;  // for the browser tests
  }

  document.addEventListener("htmx:sseOpen", function (event) {
    event.detail.source.addEventListener("readings", fetchNew);
  });
  document.addEventListener("medmesh:resync", fetchNew);
  build();
})();
