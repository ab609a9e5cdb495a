// Live pages: one EventSource on /live updates what the page marks with data-live.
// data-live="counts" (the dashboard's tiles), "device" (a row or a badge, data-device),
// "onair" (the broadcasts page's list), "command" (tables of commands with their acks).
// Text comes worded by the server in the page's language; nothing is parsed as HTML.
"use strict";
(function () {
  const marked = document.querySelectorAll("[data-live]");
  if (!marked.length || !window.EventSource) return;
  const devices = new Set();
  marked.forEach(function (el) {
    if (el.dataset.live === "device" && el.dataset.device) devices.add(el.dataset.device);
  });
  const query = new URLSearchParams();
  if (devices.size) query.set("devices", Array.from(devices).join(","));
  const source = new EventSource("/live?" + query.toString());

  function on(name, handle) {
    source.addEventListener(name, function (event) {
      let data;
      try {
        data = JSON.parse(event.data);
      } catch (e) {
        return;
      }
      handle(data);
    });
  }

  function setState(badge, data) {
    badge.textContent = data.state_text;
    badge.className = "badge state-" + data.state;
  }

  on("counts", function (counts) {
    document.querySelectorAll("[data-live=counts] [data-count]").forEach(function (el) {
      const n = counts[el.dataset.count];
      if (n !== undefined) el.textContent = String(n);
    });
  });

  on("device", function (data) {
    if (data.gone) return;
    document.querySelectorAll("[data-live=device]").forEach(function (el) {
      if (el.dataset.device !== data.id) return;
      const badge = el.querySelector("[data-role=state]");
      if (badge) {
        setState(badge, data);
        el.className = "state-" + data.state;
      } else {
        setState(el, data);
      }
      const alerts = el.querySelector("[data-role=alerts]");
      if (!alerts) return;
      alerts.replaceChildren();
      data.alerts.forEach(function (a) {
        const link = document.createElement("a");
        link.className = "badge alert";
        link.href = "/alerts";
        link.textContent = a.text;
        alerts.append(link, " ");
      });
    });
  });

  on("onair", function (data) {
    document.querySelectorAll("[data-live=onair]").forEach(function (list) {
      let item = list.querySelector("li[data-device='" + CSS.escape(data.device) + "']");
      if (!data.on) {
        if (item) item.remove();
      } else {
        if (!item) {
          item = document.createElement("li");
          item.dataset.device = data.device;
          list.append(item);
        }
        item.className = "level-" + data.level;
        const name = document.createElement("strong");
        name.textContent = data.device;
        const level = document.createElement("span");
        level.className = "badge level-" + data.level;
        level.textContent = data.level_text;
        item.replaceChildren(name, " ", level, " " + data.label + " · " + data.since_text);
      }
      const none = document.getElementById(list.dataset.none || "");
      if (none) none.hidden = list.children.length > 0;
    });
  });

  on("command", function (data) {
    if (data.gone) return;
    document.querySelectorAll("[data-live=command] tr[data-id='" + data.id + "']").forEach(
      function (row) {
        const status = row.querySelector(".status");
        if (status) status.textContent = data.status_text;
        const acks = row.querySelector(".acks");
        if (!acks) return;
        const symbols = acks.closest("[data-ack-style=symbol]") !== null;
        acks.replaceChildren();
        data.acks.forEach(function (a) {
          const span = document.createElement("span");
          span.className = "ack " + a.state;
          span.dataset.device = a.device;
          if (symbols) {
            span.title = a.text;
            span.textContent = a.device + " " + { yes: "✓", no: "✗", wait: "…" }[a.state];
          } else {
            span.textContent = a.device + ": " + a.text;
          }
          acks.append(span, " ");
        });
        if (data.more_text) {
          const more = document.createElement("span");
          more.className = "ack-more";
          more.textContent = data.more_text;
          acks.append(more);
        }
      }
    );
  });
})();
