// Developer Hub playground: chat with a deployment through the gateway, streaming, with a
// short-lived key the console mints for the signed-in user (held in memory, never stored).
(function () {
  "use strict";

  var root = document.getElementById("playground");
  if (!root) return;
  var baseUrl = root.dataset.baseUrl, model = root.dataset.model;
  var el = function (id) { return document.getElementById(id); };
  var messages = [];           // the conversation so far, as sent to the API
  var credential = null;       // {api_key, expires_at}
  var busy = false;

  function csrfToken() {
    try { return JSON.parse(document.body.getAttribute("hx-headers") || "{}")["X-CSRFToken"] || ""; }
    catch (e) { return ""; }
  }

  function fetchCredential() {
    return fetch(root.dataset.credentialUrl, {
      method: "POST", credentials: "same-origin",
      headers: { "X-CSRFToken": csrfToken(), "Accept": "application/json" },
    }).then(function (response) {
      return response.json().catch(function () { return {}; }).then(function (data) {
        if (!response.ok) throw new Error(data.detail || ("The console refused a playground key (HTTP " + response.status + ")."));
        credential = data;
        return data;
      });
    });
  }

  function usableCredential() {
    // Renew a minute before expiry rather than send a key the gateway is about to refuse.
    if (credential && Date.parse(credential.expires_at) - Date.now() > 60000) return Promise.resolve(credential);
    return fetchCredential();
  }

  function settings() {
    var temperature = parseFloat(el("pg-temperature").value);
    var maxTokens = parseInt(el("pg-max-tokens").value, 10);
    return {
      system: el("pg-system").value.trim(),
      temperature: isNaN(temperature) ? 0.7 : temperature,
      max_tokens: isNaN(maxTokens) || maxTokens < 1 ? 256 : maxTokens,
      stream: el("pg-stream").checked,
    };
  }

  function requestBody(conversation) {
    var s = settings(), all = [];
    if (s.system) all.push({ role: "system", content: s.system });
    all = all.concat(conversation);
    return { model: model, messages: all, temperature: s.temperature, max_tokens: s.max_tokens, stream: s.stream };
  }

  function bubble(role, text) {
    var empty = el("pg-empty");
    if (empty) empty.remove();
    var div = document.createElement("div");
    div.className = "pg-msg pg-" + role;
    div.dataset.role = role;
    var who = document.createElement("div");
    who.className = "pg-who";
    who.textContent = role === "user" ? "You" : model;
    var body = document.createElement("div");
    body.className = "pg-text";
    body.textContent = text;
    div.appendChild(who);
    div.appendChild(body);
    el("pg-messages").appendChild(div);
    el("pg-messages").scrollTop = el("pg-messages").scrollHeight;
    return body;
  }

  // The gateway words its messages in Markdown ("Rate limit reached for `tiny`"): a `span` shows
  // as <code>. Every part goes in as text (textContent, a text node), never as HTML, so whatever
  // the message holds is shown, not run. An unpaired backtick leaves the message as written.
  function setMessageText(node, text) {
    text = String(text || "");
    var parts = text.split("`");
    node.textContent = "";
    if (parts.length < 3 || parts.length % 2 === 0) { node.textContent = text; return; }
    parts.forEach(function (part, i) {
      if (i % 2 === 0) { if (part) node.appendChild(document.createTextNode(part)); return; }
      var code = document.createElement("code");
      code.textContent = part;
      node.appendChild(code);
    });
  }

  function showError(text) {
    var box = el("pg-error");
    setMessageText(box, text);
    box.hidden = !text;
  }

  function fmtMs(ms) { return ms < 1000 ? Math.round(ms) + " ms" : (ms / 1000).toFixed(2) + " s"; }

  function showStats(stats) {
    el("pg-prompt-tokens").textContent = stats.prompt == null ? "—" : String(stats.prompt);
    el("pg-completion-tokens").textContent = stats.completion == null ? "—" : String(stats.completion);
    el("pg-ttft").textContent = stats.ttft == null ? "—" : fmtMs(stats.ttft);
    el("pg-latency").textContent = stats.latency == null ? "—" : fmtMs(stats.latency);
    var rate = "";
    if (stats.completion && stats.latency && stats.ttft != null && stats.latency > stats.ttft) {
      rate = (stats.completion / ((stats.latency - stats.ttft) / 1000)).toFixed(1) + " tokens/s after the first";
    }
    el("pg-rate").textContent = rate;
  }

  // The API's own words, whatever shape the refusal has: OpenAI's {error: {message, code}}, an
  // engine's {error: "..."} or {message}, a framework's {detail}; the status and code after them.
  function errorText(status, data) {
    var err = (data && data.error) || {};
    if (typeof err === "string") err = { message: err };
    var message = err.message || (data && (data.message || (typeof data.detail === "string" && data.detail))) ||
      (status ? "The gateway refused the request." : "The answer stopped with an error.");
    var about = [];
    if (status) about.push("HTTP " + status);
    if (err.code && typeof err.code === "string") about.push(err.code);
    return message + (about.length ? " (" + about.join(", ") + ")" : "");
  }

  // One call to the gateway; a 401 (key expired or replaced in another tab) gets one retry with a new key.
  function call(body, retried) {
    return usableCredential().then(function (cred) {
      return fetch(baseUrl + "/chat/completions", {
        method: "POST",
        headers: { "Authorization": "Bearer " + cred.api_key, "Content-Type": "application/json" },
        body: JSON.stringify(body),
      });
    }).then(function (response) {
      if (response.status === 401 && !retried) { credential = null; return call(body, true); }
      return response;
    });
  }

  function readStream(response, target, stats, started) {
    var reader = response.body.getReader(), decoder = new TextDecoder(), buffer = "", text = "";
    function handle(line) {
      if (line.indexOf("data:") !== 0) return;
      var payload = line.slice(5).trim();
      if (!payload || payload === "[DONE]") return;
      var chunk;
      try { chunk = JSON.parse(payload); } catch (e) { return; }
      if (chunk.error) throw new Error(errorText(0, chunk));
      var choice = (chunk.choices || [])[0];
      var piece = choice && choice.delta && choice.delta.content;
      if (piece) {
        if (stats.ttft == null) stats.ttft = performance.now() - started;
        text += piece;
        target.textContent = text;
        el("pg-messages").scrollTop = el("pg-messages").scrollHeight;
      }
      if (chunk.usage) { stats.prompt = chunk.usage.prompt_tokens; stats.completion = chunk.usage.completion_tokens; }
    }
    function pump() {
      return reader.read().then(function (result) {
        if (result.done) { buffer.split("\n").forEach(handle); return text; }
        buffer += decoder.decode(result.value, { stream: true });
        var lines = buffer.split("\n");
        buffer = lines.pop();
        lines.forEach(handle);
        showStats(stats);
        return pump();
      });
    }
    return pump();
  }

  function send(text) {
    if (busy || !text.trim()) return;
    busy = true;
    el("pg-send").disabled = true;
    showError("");
    document.querySelectorAll("#pg-messages .pg-refused").forEach(function (b) { b.remove(); });
    var conversation = messages.concat([{ role: "user", content: text }]);
    var body = requestBody(conversation);
    var question = bubble("user", text);
    var target = bubble("assistant", "…");
    target.parentNode.classList.add("pg-pending");
    var stats = { prompt: null, completion: null, ttft: null, latency: null };
    var started = performance.now();
    renderCode(body);
    call(body, false).then(function (response) {
      if (!response.ok) {
        return response.text().then(function (raw) {
          var data = null;
          try { data = JSON.parse(raw); } catch (e) { data = raw ? { message: raw.slice(0, 300) } : null; }
          throw new Error(errorText(response.status, data));
        });
      }
      if (body.stream) return readStream(response, target, stats, started);
      return response.json().then(function (data) {
        stats.ttft = performance.now() - started;
        var reply = ((data.choices || [])[0] || {}).message || {};
        if (data.usage) { stats.prompt = data.usage.prompt_tokens; stats.completion = data.usage.completion_tokens; }
        target.textContent = reply.content || "";
        return reply.content || "";
      });
    }).then(function (reply) {
      stats.latency = performance.now() - started;
      messages = conversation.concat([{ role: "assistant", content: reply }]);
      target.parentNode.classList.remove("pg-pending");
      target.parentNode.dataset.done = "1";
      showStats(stats);
    }).catch(function (error) {
      // Said in the output area, where the answer would have been; the refused turn is not part
      // of the conversation, and its text goes back into the box to edit or send again.
      var refused = target.parentNode;
      refused.classList.remove("pg-pending");
      refused.classList.add("pg-refused");
      refused.setAttribute("role", "alert");
      refused.querySelector(".pg-who").textContent = "Not answered";
      setMessageText(target, error.message || String(error));
      question.parentNode.remove();
      if (!el("pg-input").value) el("pg-input").value = text;
    }).then(function () {
      busy = false;
      el("pg-send").disabled = false;
    });
  }

  // "Show code": the request the playground sends, as curl, Python (openai) and JavaScript.
  // Without a body: the message being typed as the next turn, else the last request sent.
  var lastBody = null;
  function renderCode(body) {
    var typed = el("pg-input").value;
    if (body) lastBody = body;
    else body = (!typed && lastBody) ? lastBody : requestBody(messages.concat([{ role: "user", content: typed || "Hello!" }]));
    var json = JSON.stringify(body, null, 2);
    var shellJson = JSON.stringify(body).replace(/'/g, "'\\''");
    el("pg-code-curl").textContent =
      "curl " + baseUrl + "/chat/completions" + (body.stream ? " -N" : "") + " \\\n" +
      '  -H "Authorization: Bearer $MODELDECK_API_KEY" \\\n' +
      '  -H "Content-Type: application/json" \\\n' +
      "  -d '" + shellJson + "'";
    var pyMessages = JSON.stringify(body.messages, null, 4).replace(/\n/g, "\n    ");
    var py = "import os\n\nfrom openai import OpenAI\n\n" +
      'client = OpenAI(base_url="' + baseUrl + '", api_key=os.environ["MODELDECK_API_KEY"])\n' +
      "response = client.chat.completions.create(\n" +
      "    model=" + JSON.stringify(body.model) + ",\n" +
      "    messages=" + pyMessages + ",\n" +
      "    temperature=" + body.temperature + ",\n" +
      "    max_tokens=" + body.max_tokens + ",\n" +
      (body.stream ? "    stream=True,\n)\nfor chunk in response:\n    if chunk.choices and chunk.choices[0].delta.content:\n        print(chunk.choices[0].delta.content, end=\"\", flush=True)\nprint()\n"
                   : ")\nprint(response.choices[0].message.content)\n");
    el("pg-code-python").textContent = py;
    el("pg-code-javascript").textContent =
      'const response = await fetch("' + baseUrl + '/chat/completions", {\n' +
      '  method: "POST",\n' +
      "  headers: {\n" +
      "    Authorization: `Bearer ${process.env.MODELDECK_API_KEY}`,\n" +
      '    "Content-Type": "application/json",\n' +
      "  },\n" +
      "  body: JSON.stringify(" + json.replace(/\n/g, "\n  ") + "),\n" +
      "});\n" +
      (body.stream
        ? "const reader = response.body.getReader();\nconst decoder = new TextDecoder();\nfor (;;) {\n  const { done, value } = await reader.read();\n  if (done) break;\n  process.stdout.write(decoder.decode(value)); // server-sent events: data: {...}\n}\n"
        : "const data = await response.json();\nconsole.log(data.choices[0].message.content);\n");
  }

  el("pg-form").addEventListener("submit", function (event) {
    event.preventDefault();
    var input = el("pg-input"), text = input.value;
    if (!text.trim()) return;
    // Say so rather than send another number than the one shown (the message stays in the box).
    var maxTokens = el("pg-max-tokens");
    if (maxTokens.value === "" || !maxTokens.checkValidity()) {
      showError("Max tokens: a whole number from " + maxTokens.min + " to " + maxTokens.max + ".");
      maxTokens.setAttribute("aria-invalid", "true");
      maxTokens.focus();
      return;
    }
    maxTokens.removeAttribute("aria-invalid");
    input.value = "";
    send(text);
  });
  el("pg-input").addEventListener("keydown", function (event) {
    if (event.key === "Enter" && !event.shiftKey) { event.preventDefault(); el("pg-form").requestSubmit(); }
  });
  el("pg-temperature").addEventListener("input", function () { el("pg-temperature-value").textContent = this.value; });
  el("pg-clear").addEventListener("click", function () {
    messages = [];
    el("pg-messages").innerHTML = '<p class="muted" id="pg-empty">Send a message to start.</p>';
    showStats({});
    showError("");
  });
  el("pg-show-code").addEventListener("click", function () {
    var panel = el("pg-code");
    panel.hidden = !panel.hidden;
    this.setAttribute("aria-expanded", String(!panel.hidden));
    this.textContent = panel.hidden ? "Show code" : "Hide code";
    if (!panel.hidden) renderCode();
  });
  ["pg-system", "pg-temperature", "pg-max-tokens", "pg-stream", "pg-input"].forEach(function (id) {
    el(id).addEventListener("input", function () { if (!el("pg-code").hidden) renderCode(); });
  });
  document.addEventListener("click", function (event) {
    var tab = event.target.closest("[data-code-tab]");
    if (!tab) return;
    event.preventDefault();
    document.querySelectorAll("[data-code-tab]").forEach(function (t) { t.classList.toggle("active", t === tab); });
    document.querySelectorAll("[data-code-panel]").forEach(function (p) { p.hidden = p.dataset.codePanel !== tab.dataset.codeTab; });
  });
})();
