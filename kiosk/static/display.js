// The hall TV (/display): the clock from the kiosk's own time (a TV's clock is often wrong),
// and the numbers live from /api/events. A file of its own: the page's CSP forbids inline script.
"use strict";

(() => {
  const root = document.documentElement;
  const LANG = root.dataset.lang;
  const TZ = root.dataset.tz;
  const skew = Number(root.dataset.nowMs) - Date.now(); // kiosk time minus this screen's
  const t = (vi, en) => (LANG === "en" ? en : vi);
  const DAYS = {
    Mon: t("Thứ Hai", "Monday"), Tue: t("Thứ Ba", "Tuesday"), Wed: t("Thứ Tư", "Wednesday"),
    Thu: t("Thứ Năm", "Thursday"), Fri: t("Thứ Sáu", "Friday"), Sat: t("Thứ Bảy", "Saturday"),
    Sun: t("Chủ nhật", "Sunday"),
  };
  const format = new Intl.DateTimeFormat("en-GB", {
    timeZone: TZ, hourCycle: "h23", weekday: "short", year: "numeric", month: "2-digit",
    day: "2-digit", hour: "2-digit", minute: "2-digit",
  });

  function tick() {
    const p = {};
    for (const part of format.formatToParts(new Date(Date.now() + skew))) p[part.type] = part.value;
    document.getElementById("clock-time").textContent = p.hour + ":" + p.minute;
    document.getElementById("clock-date").textContent =
      DAYS[p.weekday] + ", " + p.day + "/" + p.month + "/" + p.year;
  }

  let latestId; // undefined until the first snapshot: no flash on opening the page
  function show(s) {
    for (const c of s.counters) {
      const card = document.getElementById("counter-" + c.counter);
      if (!card) continue;
      card.querySelector(".number").textContent = c.number || "—";
      card.querySelector(".paused").classList.toggle("hidden", !c.paused);
    }
    const latest = s.last_calls[0];
    document.getElementById("latest-number").textContent = latest ? latest.number : "—";
    document.getElementById("latest-counter-number").textContent = latest ? latest.counter : "—";
    const id = latest ? latest.number + "@" + latest.called_ms : null;
    if (latestId !== undefined && id !== latestId) {
      const panel = document.getElementById("latest");
      panel.classList.remove("fresh");
      void panel.offsetWidth; // restart the animation for a new call
      panel.classList.add("fresh");
    }
    latestId = id;
    document.getElementById("calls-caption").classList.toggle("hidden", s.last_calls.length < 2);
    document.getElementById("calls").replaceChildren(...s.last_calls.slice(1, 5).map((c) => {
      const li = document.createElement("li");
      li.textContent = c.number + " → " + t("quầy ", "counter ") + c.counter;
      return li;
    }));
  }

  tick();
  setInterval(tick, 1000);
  new EventSource("/api/events").onmessage = (ev) => show(JSON.parse(ev.data));
})();
