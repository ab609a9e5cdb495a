// The speaker search of a page's target lists (_target_search.html): found as one types,
// a page at a time, from GET /api/targets. Speakers already ticked stay in every list.
"use strict";
(() => {
  const form = document.getElementById("target-search");
  if (!form) {
    return;
  }
  const input = form.querySelector("input[name=q]");
  const count = form.querySelector("[data-target-count]");
  const pagerBox = form.querySelector("[data-target-pager]");
  let page = 1;
  let timer = null;
  let asked = 0;

  function render(box, devices) {
    const kept = [...box.querySelectorAll("input:checked")].map((i) => i.closest("label"));
    const keptValues = new Set(kept.map((l) => l.querySelector("input").value));
    box.replaceChildren(...kept);
    for (const device of devices) {
      if (keptValues.has(device.value)) {
        continue;
      }
      const label = document.createElement("label");
      label.className = "check";
      const tick = document.createElement("input");
      tick.type = "checkbox";
      tick.name = "target";
      tick.value = device.value;
      label.append(tick, " " + device.label);
      box.append(label);
    }
  }

  function renderPager(found) {
    pagerBox.replaceChildren();
    if (found.pages <= 1) {
      return;
    }
    const nav = document.createElement("nav");
    nav.className = "pager";
    const button = (text, to) => {
      const b = document.createElement("button");
      b.type = "button";
      b.className = "secondary";
      b.textContent = text;
      b.addEventListener("click", () => {
        page = to;
        load();
      });
      return b;
    };
    if (found.page > 1) {
      nav.append(button(form.dataset.prev, found.page - 1));
    }
    const where = document.createElement("span");
    where.textContent = form.dataset.of.replace("{page}", found.page).replace("{pages}", found.pages);
    nav.append(where);
    if (found.page < found.pages) {
      nav.append(button(form.dataset.next, found.page + 1));
    }
    pagerBox.append(nav);
  }

  async function load() {
    const mine = ++asked;
    const params = new URLSearchParams({ q: input.value.trim(), page: String(page) });
    const lang = new URLSearchParams(window.location.search).get("lang");
    if (lang) {
      params.set("lang", lang);
    }
    const response = await fetch(`${form.dataset.api}?${params}`, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (!response.ok || mine !== asked) {
      return;
    }
    const found = await response.json();
    for (const box of document.querySelectorAll("[data-target-devices]")) {
      render(box, found.devices);
    }
    if (!found.q) {
      count.textContent = "";
    } else if (found.total) {
      count.textContent = form.dataset.found.replace("{total}", found.total);
    } else {
      count.textContent = form.dataset.none;
    }
    renderPager(found);
  }

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    page = 1;
    load();
  });
  input.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(() => {
      page = 1;
      load();
    }, 250);
  });
})();
