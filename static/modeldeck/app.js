// ModelDeck console behaviour: confirmation dialogs, sortable/filterable tables, copy buttons.
(function () {
  "use strict";

  // Destructive forms carry data-confirm; ask in a real dialog before they submit.
  function confirmDialog(message, okLabel) {
    return new Promise(function (resolve) {
      var dialog = document.getElementById("confirm-dialog");
      dialog.querySelector("[data-confirm-message]").textContent = message;
      var ok = dialog.querySelector("[data-confirm-ok]");
      ok.textContent = okLabel || "Confirm";
      function close(result) { dialog.close(); ok.onclick = null; cancel.onclick = null; resolve(result); }
      var cancel = dialog.querySelector("[data-confirm-cancel]");
      ok.onclick = function () { close(true); };
      cancel.onclick = function () { close(false); };
      dialog.showModal();
    });
  }
  // The question a form asks before it submits, or null. data-confirm-field/-value: ask only when
  // that field is given that value (access → public, a budget emptied). data-confirm-at-most: ask
  // data-confirm-at-most-message when the field holds an amount at most that (a budget no larger
  // than what is already spent stops every request).
  function confirmQuestion(form) {
    var data = form.dataset;
    var field = data.confirmField ? form.elements[data.confirmField] : null;
    if (field && data.confirmAtMost !== undefined) {
      var typed = field.value.trim(), amount = Number(typed);
      if (typed !== "" && isFinite(amount) && amount >= 0 && amount <= Number(data.confirmAtMost)) {
        return { message: data.confirmAtMostMessage, ok: data.confirmAtMostOk };
      }
    }
    if (!data.confirm) return null;
    if (data.confirmField && (!field || data.confirmValue === undefined || field.value !== data.confirmValue)) return null;
    return { message: data.confirm, ok: data.confirmOk };
  }
  document.addEventListener("submit", function (event) {
    var form = event.target;
    if (!form.dataset || form.dataset.confirmed === "1") return;
    var question = confirmQuestion(form);
    if (!question) return;
    event.preventDefault();
    confirmDialog(question.message, question.ok).then(function (yes) {
      if (!yes) return;
      form.dataset.confirmed = "1";
      if (form.requestSubmit) form.requestSubmit(event.submitter || undefined); else form.submit();
      setTimeout(function () { form.dataset.confirmed = ""; }, 0);
    });
  }, true);

  // Tables: click a .sortable header to sort; an input[data-filter-table] filters rows.
  function cellValue(row, index) {
    var cell = row.children[index];
    if (!cell) return "";
    return cell.dataset.sort !== undefined ? cell.dataset.sort : cell.textContent.trim();
  }
  function initTables(root) {
    root.querySelectorAll("table.table th.sortable").forEach(function (th) {
      if (th.dataset.bound) return;
      th.dataset.bound = "1";
      th.addEventListener("click", function () {
        var table = th.closest("table"), tbody = table.tBodies[0];
        var index = Array.prototype.indexOf.call(th.parentNode.children, th);
        var asc = !th.classList.contains("sorted-asc");
        table.querySelectorAll("th").forEach(function (h) { h.classList.remove("sorted-asc", "sorted-desc"); });
        th.classList.add(asc ? "sorted-asc" : "sorted-desc");
        var rows = Array.prototype.slice.call(tbody.rows);
        rows.sort(function (a, b) {
          var x = cellValue(a, index), y = cellValue(b, index);
          var nx = parseFloat(x), ny = parseFloat(y);
          var cmp = (!isNaN(nx) && !isNaN(ny)) ? nx - ny : x.localeCompare(y, undefined, { numeric: true, sensitivity: "base" });
          return asc ? cmp : -cmp;
        });
        rows.forEach(function (r) { tbody.appendChild(r); });
      });
    });
    root.querySelectorAll("[data-filter-table]").forEach(function (input) {
      if (input.dataset.bound) return;
      input.dataset.bound = "1";
      var table = document.getElementById(input.dataset.filterTable);
      input.addEventListener("input", function () {
        var q = input.value.toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          row.hidden = q && row.textContent.toLowerCase().indexOf(q) === -1;
        });
      });
    });
    root.querySelectorAll("[data-filter-select]").forEach(function (select) {
      if (select.dataset.bound) return;
      select.dataset.bound = "1";
      var table = document.getElementById(select.dataset.filterSelect);
      var column = parseInt(select.dataset.column, 10);
      select.addEventListener("change", function () {
        var v = select.value.toLowerCase();
        Array.prototype.forEach.call(table.tBodies[0].rows, function (row) {
          row.hidden = v && cellValue(row, column).toLowerCase() !== v;
        });
      });
    });
  }

  // Copy buttons: data-copy-target names an element whose text is copied.
  document.addEventListener("click", function (event) {
    var button = event.target.closest("[data-copy-target]");
    if (!button) return;
    var source = document.getElementById(button.dataset.copyTarget);
    var text = source ? (source.value !== undefined && source.tagName === "INPUT" ? source.value : source.textContent) : "";
    function done() { var old = button.textContent; button.textContent = "Copied"; setTimeout(function () { button.textContent = old; }, 1500); }
    if (navigator.clipboard && window.isSecureContext) navigator.clipboard.writeText(text).then(done, done);
    else { var t = document.createElement("textarea"); t.value = text; document.body.appendChild(t); t.select(); try { document.execCommand("copy"); } catch (e) {} t.remove(); done(); }
  });

  // Server-side list filters: choosing a value reloads the list with it in the URL.
  document.addEventListener("change", function (event) {
    var select = event.target.closest("select[data-submit-on-change]");
    if (select && select.form) select.form.requestSubmit();
  });

  // Deployment picker (API key form): a ticked search result joins the chosen list, so the
  // next search can replace the results without losing it; unticking a chosen one drops it.
  document.addEventListener("change", function (event) {
    var box = event.target.closest("[data-pick-deployment]");
    if (!box) return;
    var label = box.closest("[data-deployment-option]"), chosen = document.getElementById("chosen-deployments");
    if (!label || !chosen) return;
    if (box.checked) chosen.appendChild(label);
    else if (label.parentNode === chosen) label.remove();
  });

  // Narrow screens: the sidebar folds away behind the Menu button (Escape or the backdrop close it).
  function setNav(open) {
    var button = document.getElementById("nav-toggle"), backdrop = document.querySelector(".nav-backdrop");
    document.body.classList.toggle("nav-open", open);
    if (button) button.setAttribute("aria-expanded", String(open));
    if (backdrop) backdrop.hidden = !open;
  }
  document.addEventListener("click", function (event) {
    if (event.target.closest("#nav-toggle")) setNav(!document.body.classList.contains("nav-open"));
    else if (event.target.closest("[data-nav-close]")) setNav(false);
  });
  document.addEventListener("keydown", function (event) {
    if (event.key === "Escape" && document.body.classList.contains("nav-open")) setNav(false);
  });

  // Deploy form: the engine image placeholder is the chosen bundle's image (its version included).
  document.addEventListener("htmx:afterSettle", function () {
    var panel = document.getElementById("bundle-panel"), image = document.getElementById("id_image");
    if (panel && image) image.placeholder = panel.dataset.bundleImage || "the bundle's image";
  });

  // "last checked 10 s ago" keeps counting between polls (console_tags.ago's words): a check that
  // stopped running shows as an old one, not as the moment the page was drawn.
  function ago(seconds) {
    if (seconds < 60) return seconds + " s ago";
    if (seconds < 3600) return Math.floor(seconds / 60) + " min ago";
    if (seconds < 86400) return Math.floor(seconds / 3600) + " h ago";
    return Math.floor(seconds / 86400) + " d ago";
  }
  // Counted from the age the server gave (data-ago, seconds), so a browser clock set wrong doesn't matter.
  setInterval(function () {
    document.querySelectorAll("time[data-ago]").forEach(function (el) {
      if (!el.dataset.since) el.dataset.since = Date.now() - 1000 * (parseInt(el.dataset.ago, 10) || 0);
      el.textContent = ago(Math.max(0, Math.floor((Date.now() - el.dataset.since) / 1000)));
    });
  }, 1000);

  // A followed pod log stays scrolled to its newest line.
  document.addEventListener("htmx:afterSettle", function (event) {
    var log = document.getElementById("log-text"), follow = document.getElementById("log-follow");
    if (log && follow && follow.checked && event.target.contains(log)) log.scrollTop = log.scrollHeight;
  });

  // Reorderable lines (node-pool priority): a list mirrors a textarea's lines, each with up and
  // down buttons; moving a line rewrites the textarea (the value the form posts) and fires
  // "change" so the field is validated again. Typing in the textarea rebuilds the list.
  function initReorder(root) {
    root.querySelectorAll("[data-reorder-for]").forEach(function (list) {
      var area = document.getElementById(list.dataset.reorderFor);
      if (!area || list.dataset.bound) return;
      list.dataset.bound = "1";
      function lines() { return area.value.split("\n").map(function (l) { return l.trim(); }).filter(Boolean); }
      function render() {
        list.textContent = "";
        lines().forEach(function (line, i, all) {
          var item = document.createElement("li");
          var text = document.createElement("span");
          text.className = "mono";
          text.textContent = line;
          item.appendChild(text);
          [["up", "\u2191", i - 1, "Move up"], ["down", "\u2193", i + 1, "Move down"]].forEach(function (b) {
            var button = document.createElement("button");
            button.type = "button";
            button.className = "btn small";
            button.dataset.move = b[0];
            button.textContent = b[1];
            button.title = b[3];
            button.setAttribute("aria-label", b[3] + ": " + line);
            button.disabled = b[2] < 0 || b[2] >= all.length;
            button.addEventListener("click", function () {
              var now = lines(), moved = now.splice(i, 1)[0];
              now.splice(b[2], 0, moved);
              area.value = now.join("\n");
              render();
              area.dispatchEvent(new Event("change", { bubbles: true }));
            });
            item.appendChild(button);
          });
          list.appendChild(item);
        });
      }
      area.addEventListener("input", render);
      render();
    });
  }

  // A form that comes back with errors shows its first error: htmx swaps the form in place, so
  // the page would keep the scroll of the submit button at the bottom and the "Not saved" banner
  // and field errors above it would stay out of view. The banner (it lists every error) if the
  // form has one, else the first field in error; focused, so a screen reader reads it out.
  function showFirstError(root) {
    var banner = root.querySelector(".form-errors");
    var item = root.querySelector(".errorlist li");
    var field = root.querySelector(".field.has-error") || (item && item.closest(".field"));
    var target = banner || field || item;
    if (!target) return false;
    target.scrollIntoView({ block: "center" });
    var input = !banner && field && field.querySelector("input:not([type=hidden]), select, textarea");
    if (input) { input.focus({ preventScroll: true }); return true; }
    if (!target.hasAttribute("tabindex")) target.setAttribute("tabindex", "-1");
    target.focus({ preventScroll: true });
    return true;
  }
  var shownFor = null;
  document.addEventListener("htmx:afterSettle", function (event) {
    // Only the answer to a submitted form: a field validated as the user types swaps in its own
    // error list (the request comes from the field's div) and must not move the page or the focus.
    var from = event.detail && event.detail.elt, xhr = event.detail && event.detail.xhr;
    if (!from || from.tagName !== "FORM" || !xhr || shownFor === xhr) return;
    if (event.target.isConnected && showFirstError(event.target)) shownFor = xhr;
  });
  // A form posted without htmx and drawn again with its errors: the same, once the page is there.
  function showFirstErrorOnLoad() {
    var form = Array.prototype.find.call(document.forms, function (f) {
      return f.querySelector(".form-errors, .field.has-error, .errorlist li");
    });
    if (form) showFirstError(form);
  }

  document.addEventListener("DOMContentLoaded", function () { initTables(document); initReorder(document); showFirstErrorOnLoad(); });
  document.addEventListener("htmx:afterSettle", function (e) { initTables(e.target); initReorder(e.target); });
})();
