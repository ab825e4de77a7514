// Live updates from the console's one watch, over server-sent events: the list's rows and the detail page.
"use strict";
(function () {
  function listen(url, onTask) {
    var source = new EventSource(url);
    source.addEventListener("task", function (message) { onTask(JSON.parse(message.data)); });
    return source;
  }

  function listPage(table) {
    var body = table.querySelector("tbody");
    var filters = { phase: table.dataset.filterPhase, type: table.dataset.filterType,
                    namespace: table.dataset.filterNamespace };
    listen(table.dataset.stream, function (task) {
      var existing = body.querySelector('tr[data-key="' + CSS.escape(task.key) + '"]');
      if (task.kind === "DELETED") { if (existing) { existing.remove(); } return; }
      var holder = document.createElement("tbody");
      holder.innerHTML = task.row;  // rendered (and escaped) by the server's row template
      var row = holder.firstElementChild;
      var namespace = task.key.split("/")[0];
      var type = row.children[2].textContent;
      var wanted = (!filters.phase || filters.phase === task.phase) && (!filters.type || filters.type === type) &&
                   (!filters.namespace || filters.namespace === namespace);
      if (!wanted) { if (existing) { existing.remove(); } return; }
      if (existing) { existing.replaceWith(row); } else { body.appendChild(row); }
      var empty = document.getElementById("empty");
      if (empty) { empty.remove(); }
    });
  }

  function detailPage(live) {
    var chart = document.getElementById("chart-live");
    var points = [];
    if (chart) { points.push([Date.now() / 1000, +chart.dataset.objects, +chart.dataset.bytes]); }
    function draw() {
      if (!chart || points.length === 0) { return; }
      var width = chart.width.baseVal.value, height = chart.height.baseVal.value;
      var t0 = points[0][0], t1 = Math.max(points[points.length - 1][0], t0 + 1);
      [1, 2].forEach(function (series) {
        var top = Math.max.apply(null, points.map(function (p) { return p[series]; })) || 1;
        var text = points.map(function (p) {
          return ((p[0] - t0) / (t1 - t0) * width).toFixed(1) + "," + (height - p[series] / top * (height - 10)).toFixed(1);
        }).join(" ");
        chart.querySelector(".series-" + series).setAttribute("points", text);
      });
    }
    draw();
    listen(live.dataset.stream, function (task) {
      if (task.key !== live.dataset.key) { return; }
      if (task.kind === "DELETED") { window.location = "/"; return; }
      var phase = document.getElementById("phase");
      phase.textContent = task.phase;
      phase.className = "phase phase-" + task.phase;
      document.getElementById("progress").value = task.percent;
      document.getElementById("progress-text").textContent = task.done + "/" + task.found + " · " + task.bytesText;
      document.getElementById("rate").textContent = task.rate;
      document.getElementById("eta").textContent = task.eta;
      document.getElementById("last-run").textContent = task.lastRun;
      var counters = document.getElementById("counters");
      counters.querySelector('[data-field="found"]').textContent = task.found;
      counters.querySelector('[data-field="failed"]').textContent = task.failed;
      points.push([task.at, task.done, task.bytesDone]);
      draw();
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("tasks");
    if (table) { listPage(table); }
    var live = document.getElementById("live");
    if (live) { detailPage(live); }
  });
})();
