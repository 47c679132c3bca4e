// The Configure page's helpers: the signature key checklist, show/hide, and Test API
// Webhook without leaving the page. Everything also works with scripting off.
(function () {
  "use strict";
  // times come as UTC in <time datetime>; show them in the reader's zone and language,
  // the UTC instant kept in the title
  var lang = document.documentElement.lang || undefined;
  document.querySelectorAll("time[datetime]").forEach(function (el) {
    var at = new Date(el.getAttribute("datetime"));
    if (isNaN(at)) return;
    el.title = el.textContent;
    el.textContent = at.toLocaleString(lang, { dateStyle: "medium", timeStyle: "medium" });
  });

  var form = document.getElementById("configure");
  if (!form) return;
  var words = form.dataset;
  var key = document.getElementById("webhook_signature_key");
  var toggle = document.getElementById("toggle-key");
  var testButton = document.getElementById("test-button");
  var result = document.getElementById("test-result");

  // the rules of parcelhook.domain.keys; "special" is Python's string.punctuation
  var RULES = {
    length: function (v) { return Array.from(v).length >= 16; },
    digit: function (v) { return /[0-9]/.test(v); },
    uppercase: function (v) { return /[A-Z]/.test(v); },
    lowercase: function (v) { return /[a-z]/.test(v); },
    special: function (v) { return /[!-\/:-@\[-`{-~]/.test(v); }
  };

  function mark(item, state) {
    item.classList.toggle("met", state === "met");
    item.classList.toggle("unmet", state === "unmet");
    item.querySelector(".rule-state").textContent =
      state === "met" ? words.met : state === "unmet" ? words.missing : "";
  }

  function check() {
    var value = key.value;
    form.querySelectorAll("#key-rules li").forEach(function (item) {
      var rule = RULES[item.dataset.rule];
      mark(item, !value || !rule ? "" : rule(value) ? "met" : "unmet");
    });
  }

  key.addEventListener("input", check);

  toggle.hidden = false;
  toggle.addEventListener("click", function () {
    var show = key.type === "password";
    key.type = show ? "text" : "password";
    toggle.textContent = show ? words.hide : words.show;
    toggle.setAttribute("aria-pressed", show ? "true" : "false");
  });

  function show(kind, summary, excerpt) {
    result.className = "test-result" + (kind ? " " + kind : "");
    result.textContent = "";
    var line = document.createElement("p");
    line.className = "summary";
    line.textContent = summary;
    result.appendChild(line);
    if (excerpt) {
      var pre = document.createElement("pre");
      pre.className = "excerpt";
      pre.textContent = excerpt;
      result.appendChild(pre);
    }
  }

  // a refused test (a weak key, a missing URL) names its rules and its message; a test
  // that ran answers with its result, delivered or not, and always with a summary in words
  function refused(error) {
    (error.rules || []).forEach(function (rule) {
      var item = form.querySelector('#key-rules li[data-rule="' + rule + '"]');
      if (item) mark(item, "unmet");
    });
    show("bad", words.refused + " " + (error.message || ""), "");
  }

  function answered(response) {
    return response.json().then(function (data) {
      if (!response.ok) {
        refused(data && typeof data.error === "object" && data.error ? data.error : {});
      } else {
        show(data.delivered ? "ok" : "bad", data.summary, data.response_excerpt);
      }
    });
  }

  var busy = false;
  form.addEventListener("submit", function (event) {
    if (event.submitter !== testButton) return;
    event.preventDefault();
    if (busy) return;
    // aria-disabled, not disabled: a disabled button drops the keyboard focus to <body>
    busy = true;
    testButton.setAttribute("aria-disabled", "true");
    show("", words.sending, "");
    var body = new URLSearchParams(new FormData(form));
    body.delete("do");
    fetch(testButton.dataset.testUrl, {
      method: "POST",
      body: body,
      headers: { Accept: "application/json" },
      credentials: "same-origin"
    })
      .then(answered)
      .catch(function () { show("bad", words.noAnswer, ""); })
      .finally(function () {
        busy = false;
        testButton.removeAttribute("aria-disabled");
      });
  });
})();
