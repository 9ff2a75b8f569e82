// The console's live part is re-rendered by the server; this polls it,
// copies magnets and puts the operator's token into action forms. The
// token stays in this tab's sessionStorage, never in a URL.
(function () {
  "use strict";
  var poll = parseInt(document.body.dataset.poll, 10) || 3000;
  var token = document.getElementById("token");
  var operator = document.getElementById("operator");
  token.value = sessionStorage.getItem("archivefleet-token") || "";
  operator.value = sessionStorage.getItem("archivefleet-operator") || "";
  token.addEventListener("input", function () { sessionStorage.setItem("archivefleet-token", token.value); });
  operator.addEventListener("input", function () { sessionStorage.setItem("archivefleet-operator", operator.value); });

  document.addEventListener("submit", function (e) {
    var f = e.target;
    if (!f.classList.contains("act")) { return; }
    if (f.dataset.confirm && !window.confirm(f.dataset.confirm)) { e.preventDefault(); return; }
    [["token", token.value], ["operator", operator.value]].forEach(function (kv) {
      var i = f.querySelector("input[name=" + kv[0] + "]");
      if (!i) { i = document.createElement("input"); i.type = "hidden"; i.name = kv[0]; f.appendChild(i); }
      i.value = kv[1];
    });
  });

  document.addEventListener("click", function (e) {
    var b = e.target;
    if (!b.classList || !b.classList.contains("copy")) { return; }
    var text = b.dataset.copy;
    var done = function () { b.textContent = "copied"; setTimeout(function () { b.textContent = "copy"; }, 1500); };
    if (navigator.clipboard && window.isSecureContext) {
      navigator.clipboard.writeText(text).then(done, function () {});
    } else {
      var i = b.previousElementSibling; i.focus(); i.select(); document.execCommand("copy"); done();
    }
  });

  // An action's answer (?done= or ?error=) stays on the page a while,
  // then the address loses it so the refreshed page drops it too.
  var flashFor = 30000;
  if (/[?&](done|error)=/.test(window.location.search)) {
    setTimeout(function () {
      var q = new URLSearchParams(window.location.search);
      q.delete("done"); q.delete("error");
      var s = q.toString();
      history.replaceState(null, "", window.location.pathname + (s ? "?" + s : ""));
    }, flashFor);
  }

  var live = document.getElementById("live");
  var busy = false;
  function refresh() {
    // Keep a form the operator is using, and the page's message, as they are.
    if (busy || document.activeElement && live.contains(document.activeElement) && document.activeElement.tagName === "INPUT") { return; }
    busy = true;
    fetch("live" + window.location.search, { credentials: "same-origin", cache: "no-store" })
      .then(function (r) { return r.ok ? r.text() : Promise.reject(r.status); })
      .then(function (html) { live.innerHTML = html; document.body.dataset.refreshed = String(Date.now()); })
      .catch(function () {})
      .then(function () { busy = false; });
  }
  setInterval(refresh, poll);
})();
