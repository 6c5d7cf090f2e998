// runnerd's dashboard: the live parts (no inline script: the CSP allows this file only).
"use strict";

// The Run page's live log: pre#log[data-events] is the SSE URL, starting after the
// last entry the page showed (?after=); on a dropped connection EventSource resumes
// with Last-Event-ID by itself. Each `log` event is a line of its stream's class;
// `end` carries the final run: the status, exit code, failure box, the Swarm node
// and the warning that the log may be incomplete are updated.
(function () {
  function liveLog() {
    var pre = document.querySelector("pre#log[data-events]");
    if (!pre || !window.EventSource) {
      return;
    }
    var source = new EventSource(pre.getAttribute("data-events"));
    source.addEventListener("log", function (event) {
      var entry = JSON.parse(event.data);
      var atEnd = pre.scrollTop + pre.clientHeight >= pre.scrollHeight - 4;
      var line = document.createElement("span");
      line.className = "line " + (entry.stream === "stderr" ? "stderr" : "stdout");
      line.setAttribute("data-id", event.lastEventId);
      line.textContent = entry.msg + "\n";
      pre.appendChild(line);
      if (atEnd) {
        pre.scrollTop = pre.scrollHeight;
      }
    });
    source.addEventListener("end", function (event) {
      source.close();
      pre.removeAttribute("data-events");
      showEnded(JSON.parse(event.data));
    });
  }

  function setText(selector, text) {
    var el = document.querySelector(selector);
    if (el) {
      el.textContent = text;
    }
  }

  function showEnded(run) {
    var status = document.getElementById("run-status");
    if (status) {
      var reason = run.failure_reason || "";
      status.textContent = run.status === "failed" && reason ? "failed: " + reason : run.status;
      status.setAttribute("data-status", run.status);
      status.setAttribute("data-failure-reason", reason);
      status.className = "status-" + run.status;
    }
    setText("#exit-code", run.exit_code === null ? "—" : String(run.exit_code));
    if (run.completed_at) {
      setText("#completed-at", run.completed_at.replace("T", " ").slice(0, 19));
    }
    var failure = document.getElementById("failure");
    if (failure && run.status === "failed") {
      setText("#failure .failure-reason", run.failure_reason || "");
      setText("#failure .failure-error", run.error || "");
      failure.hidden = false;
    }
    var node = document.getElementById("node-row");
    if (node && run.node) {
      setText("#node code", run.node);
      node.hidden = false;
    }
    var incomplete = document.getElementById("log-incomplete");
    if (incomplete && run.log_incomplete === true) {
      incomplete.hidden = false;
    }
    var cancel = document.getElementById("cancel-run");
    if (cancel) {
      cancel.hidden = true;
    }
  }

  if (document.readyState === "loading") {
    document.addEventListener("DOMContentLoaded", liveLog);
  } else {
    liveLog();
  }
})();
