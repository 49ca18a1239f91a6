// A deployment's Metrics tab: the gateway's measurements per revision as Chart.js (vendored) charts.
(function () {
  "use strict";
  var COLORS = ["#4f46e5", "#12b76a", "#f79009", "#2e90fa", "#ee46bc", "#667085"];

  function draw() {
    var source = document.getElementById("deployment-metrics");
    if (!source || !window.Chart) return;
    var m = JSON.parse(source.textContent);
    window.modeldeckMetricCharts = (window.modeldeckMetricCharts || []).filter(function (c) { c.destroy(); return false; });
    var base = {
      responsive: true, maintainAspectRatio: false, animation: false,
      plugins: { legend: { position: "bottom", labels: { boxWidth: 12 } } },
      scales: { x: { ticks: { maxTicksLimit: 8 } }, y: { beginAtZero: true } },
    };
    function name(rev) { return rev.revision ? "r" + rev.revision : "unknown revision"; }
    function chart(id, type, datasets) {
      var canvas = document.getElementById(id);
      if (!canvas) return;
      window.modeldeckMetricCharts.push(new Chart(canvas, {
        type: type, data: { labels: m.labels, datasets: datasets }, options: JSON.parse(JSON.stringify(base)),
      }));
    }
    // unit: how the tooltip writes a value (static/modeldeck/charts.js).
    function per(field, type, unit, suffix, dash) {
      return m.revisions.map(function (rev, i) {
        var color = COLORS[i % COLORS.length] + (dash ? "88" : "");  // p95: the same hue, lighter
        return {
          label: name(rev) + (suffix || ""), data: rev[field], borderColor: color, backgroundColor: color, unit: unit,
          spanGaps: true, pointRadius: 2, borderDash: dash || [], stack: type === "bar" ? "s" : undefined,
        };
      });
    }
    chart("metric-requests", "bar", per("requests", "bar", "count"));
    chart("metric-errors", "bar", per("errors", "bar", "count"));
    chart("metric-latency", "line", per("p50", "line", "ms", " p50").concat(per("p95", "line", "ms", " p95", [5, 4])));
    chart("metric-ttft", "line", per("ttft_p50", "line", "ms", " p50"));
    chart("metric-tps", "line", per("tokens_per_second", "line", "tokens/s"));
  }
  document.addEventListener("DOMContentLoaded", draw);
})();
