/* nightwatch console: live updates by polling small JSON routes of the same server.
   No framework, no build step. Text from the server is set with textContent; the only HTML
   inserted is what the server rendered (and escaped) from its own templates. */
(function () {
  "use strict";
  var POLL_MS = 1500;
  var COUNTS_EVERY = 5;  /* the tasks-per-status counts are refreshed every 5th poll */
  var root = document.body.getAttribute("data-root") || "";

  function $(selector, scope) { return (scope || document).querySelector(selector); }

  function fetchJSON(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "application/json" } })
      .then(function (r) {
        if (r.status === 401) { window.location.assign(root + "/login?next=" + encodeURIComponent(location.pathname + location.search)); }
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.json();
      });
  }

  function fetchText(url) {
    return fetch(url, { credentials: "same-origin", cache: "no-store", headers: { Accept: "text/plain" } })
      .then(function (r) {
        if (!r.ok) { throw new Error("HTTP " + r.status); }
        return r.text();
      });
  }

  function liveState(text) {
    var el = $("#live-state");
    if (el) { el.textContent = text; }
  }

  function announce(text) {
    var el = $("#announce");
    if (el) { el.textContent = text; }
  }

  /* Run ``step`` now and then every POLL_MS after it settles (never two at once); skipped
     while the tab is hidden. ``step`` may return false to stop. */
  function every(step) {
    function loop() {
      if (document.hidden) { setTimeout(loop, POLL_MS); return; }
      Promise.resolve().then(step).then(function (more) {
        liveState("");
        if (more !== false) { setTimeout(loop, POLL_MS); }
      }, function (err) {
        liveState("Live updates interrupted (" + err.message + "); retrying.");
        setTimeout(loop, POLL_MS * 2);
      });
    }
    loop();
  }

  function setBadge(badge, status) {
    if (!badge || badge.textContent === status) { return false; }
    badge.textContent = status;
    badge.className = "badge st-" + status.replace(/\s+/g, "_");
    return true;
  }

  function showCounts(counts) {
    var list = document.getElementById("status-counts");
    if (!list) { return; }
    var items = Object.keys(counts).sort().map(function (status) {
      var li = document.createElement("li");
      var a = document.createElement("a");
      a.href = "?status=" + encodeURIComponent(status);
      var badge = document.createElement("span");
      setBadge(badge, status);
      a.appendChild(badge);
      a.appendChild(document.createTextNode(" " + counts[status]));
      li.appendChild(a);
      return li;
    });
    list.replaceChildren.apply(list, items);
  }

  function taskList(table) {
    var tbody = $("tbody", table);
    var top = parseInt(table.getAttribute("data-top"), 10) || 0;
    var query = table.getAttribute("data-query") || "";
    var live = table.getAttribute("data-live") === "1";
    var polls = 0;
    every(function () {
      polls += 1;
      var ids = Array.prototype.map.call(tbody.querySelectorAll("tr[data-task-id]"), function (tr) {
        return tr.getAttribute("data-task-id");
      });
      var url = root + "/console/live?ids=" + ids.join(",") + "&top=" + top + (query ? "&" + query : "") +
        (polls % COUNTS_EVERY === 0 ? "&counts=1" : "");
      return fetchJSON(url).then(function (doc) {
        doc.tasks.forEach(function (t) {
          var tr = tbody.querySelector('tr[data-task-id="' + t.id + '"]');
          if (!tr) { return; }
          setBadge($("td.status .badge", tr), t.status);
          $("td.message", tr).textContent = t.message;
          $("td.attempt", tr).textContent = String(t.attempt);
          $("td.updated time", tr).textContent = t.updated;
        });
        if (live && doc.new_rows) {
          tbody.insertAdjacentHTML("afterbegin", doc.new_rows);
          top = doc.top;
          var empty = $(".empty");
          if (empty) { empty.remove(); }
        }
        if (doc.counts) { showCounts(doc.counts); }
      });
    });
  }

  function taskPage(box) {
    var id = box.getAttribute("data-task-id");
    var version = box.getAttribute("data-version");
    var parts = ["summary", "events", "attempts", "actions"];
    every(function () {
      return fetchJSON(root + "/tasks/" + id + "/live").then(function (doc) {
        if (doc.version === version) { return; }
        version = doc.version;
        var focused = document.activeElement && document.activeElement.id;
        parts.forEach(function (part) {
          var el = document.getElementById(part + "-part");
          if (el) { el.innerHTML = doc.html[part]; }
        });
        if (focused && document.getElementById(focused)) { document.getElementById(focused).focus(); }
        box.setAttribute("data-terminal", doc.terminal ? "1" : "0");
        announce("Status: " + doc.status);
      });
    });
    taskLog(box, id);
  }

  function taskLog(box, id) {
    var log = $("#log");
    var follow = $("#follow");
    if (!log) { return; }
    var shown = null;
    var finalPulls = 0;
    function pull() {
      return fetchText(root + "/tasks/" + id + "/log?tail=200").then(function (text) {
        if (text !== shown) {
          shown = text;
          log.textContent = text === "" ? "(no output yet)" : text;
          if (follow && follow.checked) { log.scrollTop = log.scrollHeight; }
        }
      });
    }
    pull().catch(function (err) { log.textContent = "(log unavailable: " + err.message + ")"; });
    every(function () {
      if (!follow || !follow.checked) { return; }
      if (box.getAttribute("data-terminal") === "1") {
        finalPulls += 1;  /* a finished job writes no more: a few last pulls, then stop */
        if (finalPulls > 3) { return; }
      } else {
        finalPulls = 0;
      }
      return pull();
    });
    if (follow) {
      follow.addEventListener("change", function () { if (follow.checked) { finalPulls = 0; pull(); } });
    }
  }

  document.addEventListener("DOMContentLoaded", function () {
    var table = document.getElementById("tasks");
    if (table) { taskList(table); }
    var box = document.getElementById("task");
    if (box) { taskPage(box); }
  });
})();
