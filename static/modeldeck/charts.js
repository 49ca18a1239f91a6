// Chart tooltips that read like the page around them: money as console/money.py's money_text
// writes it, with its currency; counts with thousands separators; milliseconds and rates with
// sensible decimals. base.html loads this after the page's scripts (all deferred), so Chart.js,
// where a page has it, is there and no chart has been drawn yet.
(function () {
  "use strict";

  // money_text: 2 to 4 decimal places; an amount too small for 4 keeps its first two
  // significant digits, to 8 places (0.0000052 → "0.0000052"), never "0.00".
  function money(value, currency) {
    var amount = Number(value), size = Math.abs(amount), text;
    if (!isFinite(amount)) return String(value);
    if (amount !== 0 && size < 0.0001) {
      text = amount.toFixed(Math.min(8, 1 - Math.floor(Math.log10(size))));
    } else {
      text = amount.toFixed(4);
    }
    var parts = text.split("."), fraction = parts[1].replace(/0+$/, "");
    while (fraction.length < 2) fraction += "0";
    return parts[0] + "." + fraction + (currency ? " " + currency : "");
  }

  // Whole numbers (requests, tokens) as the page's intcomma writes them: 12,345,678.
  function count(value) {
    return Math.round(Number(value)).toLocaleString("en-US");
  }

  // Fewer decimals as the number grows: 1,234 · 262 · 60.6 · 5.58 · 0.04.
  function decimal(value) {
    var size = Math.abs(Number(value));
    var places = size >= 100 ? 0 : size >= 10 ? 1 : 2;
    return Number(value).toLocaleString("en-US", { maximumFractionDigits: places });
  }

  function format(value, unit, currency) {
    if (value === null || value === undefined || value === "") return "—";
    if (unit === "money") return money(value, currency);
    if (unit === "count") return count(value);
    if (unit === "ms") return decimal(value) + " ms";
    if (unit && unit !== "decimal") return decimal(value) + " " + unit;  // e.g. "tokens/s"
    return decimal(value);
  }

  // A chart names its unit on its dataset or its canvas (data-unit, data-currency), e.g. the
  // Developer Hub's usage charts (templates/devhub/htmx/usage_body.html).
  function unitOf(context) {
    var canvas = context.chart.canvas;
    return context.dataset.unit || (canvas && canvas.dataset.unit) || "decimal";
  }

  function currencyOf(context) {
    var canvas = context.chart.canvas;
    return context.dataset.currency || (canvas && canvas.dataset.currency) || "";
  }

  function label(context) {
    var unit = unitOf(context), name = context.dataset.label || "";
    if (unit === "ms") name = name.replace(/ ms$/, "");  // "p50 ms: 250 ms" reads "p50: 250 ms"
    var value = format(context.parsed.y, unit, unit === "money" ? currencyOf(context) : "");
    return name ? name + ": " + value : value;
  }

  window.modeldeckFormat = { money: money, count: count, decimal: decimal, format: format };
  if (window.Chart) window.Chart.defaults.plugins.tooltip.callbacks.label = label;
})();
