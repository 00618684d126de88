// Herald console: small enhancements. Every page works without them.
(() => {
  "use strict";

  // Copy buttons: shown only when they can work.
  for (const button of document.querySelectorAll("button[data-copy]")) {
    button.hidden = false;
    button.addEventListener("click", async () => {
      const field = document.getElementById(button.dataset.copy);
      if (!field) return;
      try {
        await navigator.clipboard.writeText(field.value);
        button.textContent = "Copied";
      } catch {
        field.focus();
        field.select();
        button.textContent = "Press Ctrl+C";
      }
      setTimeout(() => { button.textContent = "Copy"; }, 2500);
    });
  }

  // A form sends once: its buttons rest until the next page.
  for (const form of document.querySelectorAll("form[method='post']")) {
    form.addEventListener("submit", () => {
      // After this turn, so that the pressed button's value is sent.
      setTimeout(() => {
        for (const button of form.querySelectorAll("button[type='submit'], button:not([type])")) {
          button.disabled = true;
        }
      });
    });
  }
  // A page restored from the back/forward cache gets its buttons back.
  window.addEventListener("pageshow", () => {
    for (const button of document.querySelectorAll("form button[disabled]")) button.disabled = false;
  });

  // Buttons that ask first.
  for (const button of document.querySelectorAll("button[data-confirm]")) {
    button.addEventListener("click", (event) => {
      if (!window.confirm(button.dataset.confirm)) event.preventDefault();
    });
  }

  // Links to a confirmation page: with scripts on, a dialog asks instead
  // and OK posts the form the page would have posted.
  for (const link of document.querySelectorAll("a[data-confirm-post]")) {
    link.addEventListener("click", (event) => {
      event.preventDefault();
      if (!window.confirm(link.dataset.confirmPost)) return;
      const form = document.createElement("form");
      form.method = "post";
      form.action = link.href;
      const csrf = document.createElement("input");
      csrf.type = "hidden";
      csrf.name = "csrf";
      csrf.value = link.dataset.csrf;
      form.append(csrf);
      document.body.append(form);
      form.submit();
    });
  }

  // Test events: choosing a type puts its example payload in the box,
  // unless the box has been edited.
  for (const select of document.querySelectorAll("select[data-example-for]")) {
    const area = document.getElementById(select.dataset.exampleFor);
    if (!area) continue;
    let example = area.value;
    select.addEventListener("change", () => {
      const option = select.selectedOptions[0];
      if (option && area.value.trim() === example.trim()) {
        area.value = option.dataset.example || "";
        example = area.value;
      }
    });
  }

  // The delivery log follows its changes while the page is open.
  for (const table of document.querySelectorAll("table[data-live]")) follow(table);

  function follow(table) {
    const size = Number(table.dataset.pageSize) || 25;
    const status = document.querySelector("[data-live-status]");
    const say = (text) => { if (status) status.textContent = text; };
    // The page as the server renders it now, or null when it cannot be
    // read (the connection's retry reads it again). The header tells the
    // page not to use up a one-time notice meant for the next page load.
    const read = async () => {
      try {
        const response = await fetch(window.location.href, {
          credentials: "same-origin",
          headers: { "herald-resync": "1" },
        });
        if (!response.ok) return null;
        return new DOMParser().parseFromString(await response.text(), "text/html");
      } catch {
        return null;
      }
    };
    // A webhook's page has its health chart above the log: it is read
    // again with the log, and a little after deliveries change, once for
    // a burst of them. Reads are numbered, so that a slow one never
    // replaces what a later one showed.
    const health = document.getElementById("health");
    let healthReads = 0;
    let healthShown = 0;
    const renewHealth = (page, number) => {
      if (!health || number < healthShown) return;
      healthShown = number;
      for (const part of ["figure", "details tbody"]) {
        const fresh = page.querySelector(`#health ${part}`);
        const held = health.querySelector(part);
        if (fresh && held) held.replaceWith(document.adoptNode(fresh));
      }
    };
    // A change that comes while a read is under way schedules another:
    // that read may have been rendered before the change was stored.
    let healthDue = null;
    const renewHealthSoon = () => {
      if (!health || healthDue) return;
      healthDue = setTimeout(async () => {
        healthDue = null;
        const number = ++healthReads;
        const page = await read();
        if (page) renewHealth(page, number);
      }, 2000);
    };
    // Reads the log again: on (re)connecting, so that changes made
    // between the page's rendering and the subscription are not missed,
    // and when the server says too much changed to follow one by one.
    const resync = async () => {
      const number = ++healthReads;
      const page = await read();
      if (!page) return;
      const fresh = page.querySelector("table[data-live] tbody");
      if (fresh) table.tBodies[0].replaceWith(document.adoptNode(fresh));
      if (fresh && fresh.rows.length > 0) {
        for (const empty of document.querySelectorAll("[data-empty]")) empty.remove();
      }
      renewHealth(page, number);
    };
    const source = new EventSource(table.dataset.live);
    source.addEventListener("open", () => {
      say("This log updates by itself while the page is open.");
      resync();
    });
    // A refused log (too many open in this session, or the session ended)
    // is closed for good; a dropped connection is retried by the browser.
    source.addEventListener("error", () => say(source.readyState === EventSource.CLOSED
      ? "Live updates stopped: too many tabs follow a delivery log, or you were signed out. Close other log tabs, then reload this page."
      : "Live updates paused; reconnecting…"));
    source.addEventListener("upsert", (event) => {
      const template = document.createElement("template");
      template.innerHTML = event.data.trim();
      const row = template.content.firstElementChild;
      if (!row || !row.id) return;
      const body = table.tBodies[0];
      const existing = document.getElementById(row.id);
      if (existing) {
        existing.replaceWith(row);
      } else {
        body.prepend(row);
        while (body.rows.length > size) body.lastElementChild.remove();
      }
      row.classList.add("fresh");
      for (const empty of document.querySelectorAll("[data-empty]")) empty.remove();
      renewHealthSoon();
    });
    source.addEventListener("drop", (event) => {
      document.getElementById(event.data)?.remove();
      renewHealthSoon();
    });
    source.addEventListener("resync", resync);
  }
})();
