(function () {
  "use strict";
  const data = JSON.parse(document.getElementById("leaderboard-data").textContent);
  const table = document.getElementById("leaderboard");
  const tbody = table.tBodies[0];
  const rowEls = new Map(Array.from(tbody.rows, (tr) => [Number(tr.dataset.index), tr]));
  const headers = Array.from(table.querySelectorAll("th[data-key]"));
  const selects = Array.from(document.querySelectorAll("#filters select"));
  const text = document.getElementById("filter-text");
  const count = document.getElementById("row-count");
  const state = { key: null, dir: null };

  const value = (i, key) => {
    const v = data.rows[i][key];
    return Array.isArray(v) ? v.join(" ") : v;
  };
  const missing = (v) => v === null || v === undefined || v === "";
  const header = (key) => headers.find((th) => th.dataset.key === key);

  function matches(i) {
    for (const select of selects) {
      if (select.value !== "" && String(data.rows[i][select.dataset.key]) !== select.value) return false;
    }
    const needle = text.value.trim().toLowerCase();
    return needle === "" || rowEls.get(i).textContent.toLowerCase().includes(needle);
  }

  function compare(i, j) {
    const a = value(i, state.key), b = value(j, state.key);
    // Missing values go last in either direction; ties keep the leaderboard order.
    if (missing(a) || missing(b)) return (missing(a) - missing(b)) || (i - j);
    const numeric = header(state.key).dataset.type === "number";
    const order = numeric ? a - b : (a < b ? -1 : a > b ? 1 : 0);
    return (state.dir === "asc" ? 1 : -1) * (order || (i - j));
  }

  function saveState() {
    const params = new URLSearchParams();
    if (state.key) { params.set("sort", state.key); params.set("dir", state.dir); }
    for (const select of selects) if (select.value) params.set(select.dataset.key, select.value);
    if (text.value) params.set("q", text.value);
    const hash = params.toString();
    if (!hash && !location.hash && !location.search) return;
    try { history.replaceState(null, "", location.pathname + (hash ? "#" + hash : "")); } catch (e) { /* file:// may refuse */ }
  }

  function update() {
    let shown = data.rows.map((_, i) => i).filter(matches);
    if (state.key) shown.sort(compare);
    tbody.replaceChildren(...shown.map((i) => rowEls.get(i)));
    for (const th of headers) {
      const sorted = th.dataset.key === state.key;
      th.setAttribute("aria-sort", sorted ? (state.dir === "asc" ? "ascending" : "descending") : "none");
    }
    count.textContent = shown.length + " of " + data.rows.length + " rows shown";
    count.dataset.shown = String(shown.length);
    document.getElementById("no-rows").hidden = shown.length > 0 || data.rows.length === 0;
    const zoo = document.getElementById("filter-zoo").value;
    for (const section of document.querySelectorAll(".zoo-plots")) section.hidden = zoo !== "" && section.dataset.zoo !== zoo;
    saveState();
  }

  function sortBy(key, dir) {
    const th = header(key);
    if (!th) return;
    if (dir !== "asc" && dir !== "desc") {
      // Clicking the sorted column reverses it; a new column starts high-to-low for numbers.
      dir = state.key === key ? (state.dir === "asc" ? "desc" : "asc") : (th.dataset.type === "number" ? "desc" : "asc");
    }
    state.key = key;
    state.dir = dir;
    update();
  }

  for (const th of headers) th.querySelector("button").addEventListener("click", () => sortBy(th.dataset.key));
  for (const select of selects) select.addEventListener("change", update);
  text.addEventListener("input", update);

  // View state from the URL: the query, then the hash (which wins); applied like user input.
  const params = new URLSearchParams(location.search);
  new URLSearchParams(location.hash.slice(1)).forEach((v, k) => params.set(k, v));
  for (const select of selects) {
    const wanted = params.get(select.dataset.key);
    if (wanted !== null) select.value = Array.from(select.options).some((o) => o.value === wanted) ? wanted : "";
  }
  if (params.has("q")) text.value = params.get("q");
  if (params.has("sort")) sortBy(params.get("sort"), params.get("dir"));
  else update();
  for (const key of (params.get("click") || "").split(",").filter(Boolean)) {
    const th = header(key);
    if (th) th.querySelector("button").click();
  }
})();
