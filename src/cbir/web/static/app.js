// cbir search page: drag and drop or paste, a preview of the query, results without a page
// reload, more results on request. The server renders the results fragment (escaped by Jinja);
// this script only swaps it in. Each history entry keeps its results (history.state), so Back
// after "more like this" shows an upload's results again, which no URL could fetch.
"use strict";

(() => {
  const form = document.getElementById("search-form");
  const results = document.getElementById("results");
  if (!form || !results) return;
  const input = document.getElementById("image-input");
  const dropzone = document.getElementById("dropzone");
  const preview = document.getElementById("preview");
  const kSelect = document.getElementById("k-select");
  let previewUrl = null;
  let lastUpload = null; // kept for "more results" after the file input was cleared

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    dropzone.classList.add("has-image");
  }

  // A file the browser cannot show either (not an image): no broken-image icon.
  preview.addEventListener("error", () => {
    preview.hidden = true;
    preview.removeAttribute("src");
    dropzone.classList.remove("has-image");
  });

  function clearPreview() {
    input.value = "";
    preview.hidden = true;
    preview.removeAttribute("src");
    dropzone.classList.remove("has-image");
  }

  function showError(message) {
    const box = document.createElement("div");
    box.className = "notice error";
    box.setAttribute("role", "alert");
    box.textContent = message;
    results.replaceChildren(box);
  }

  // The results fragment for a request, or null (an error shown in its place).
  async function fetchFragment(url, options = {}) {
    try {
      const response = await fetch(url, { ...options, headers: { "X-Partial": "1" } });
      const type = response.headers.get("Content-Type") || "";
      if (type.startsWith("text/html")) return await response.text();
      showError(`The server answered ${response.status} ${response.statusText}.`);
    } catch (error) {
      showError("The server could not be reached. Is `cbir serve` still running?");
    }
    return null;
  }

  async function load(url, options = {}) {
    results.setAttribute("aria-busy", "true");
    try {
      const html = await fetchFragment(url, options);
      if (html !== null) results.innerHTML = html;
      return html !== null;
    } finally {
      results.removeAttribute("aria-busy");
    }
  }

  function remember() {
    history.replaceState({ results: results.innerHTML }, "");
  }

  function uploadForm(offset) {
    const body = new FormData();
    body.set("image", lastUpload, lastUpload.name);
    body.set("k", kSelect.value);
    if (offset) body.set("offset", String(offset));
    return { method: "POST", body };
  }

  async function searchUpload() {
    if (!input.files.length) return;
    const limit = Number(form.dataset.maxBytes);
    if (limit && input.files[0].size > limit) {
      const mib = (size) => (size / 1048576).toFixed(1);
      showError(`That file is ${mib(input.files[0].size)} MB; the limit is ${mib(limit)} MB.`);
      return;
    }
    lastUpload = input.files[0];
    // An upload has no URL of its own: its entry is the page's, with its results in state.
    if (location.search) history.pushState(null, "", form.action);
    await load(form.action, uploadForm(0));
    remember();
  }

  async function searchById(id, push) {
    const url = new URL(form.action, location.href);
    url.searchParams.set("id", id);
    url.searchParams.set("k", kSelect.value);
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
    clearPreview();
    await load(url);
    remember();
  }

  // "More results": the next page of the same query, appended below the results shown.
  async function morePage(control) {
    const offset = Number(control.dataset.offset);
    const summary = results.querySelector("[data-query-kind]");
    let html = null;
    control.disabled = true;
    if (control.tagName === "A") html = await fetchFragment(control.href);
    else if (lastUpload) html = await fetchFragment(form.action, uploadForm(offset));
    else showError("Choose the image again to see more results.");
    if (html === null || !summary) return;
    const page = document.createElement("template");
    page.innerHTML = html;
    const grid = results.querySelector("ol.grid");
    const cards = page.content.querySelectorAll("ol.grid > li");
    if (grid) grid.append(...cards);
    const count = results.querySelector(".query-summary .count");
    if (count && grid) count.textContent = String(grid.children.length);
    const next = page.content.querySelector(".more-results");
    const current = control.closest(".more-results");
    if (next) current.replaceWith(next);
    else current.remove();
    remember();
  }

  input.addEventListener("change", () => {
    if (!input.files.length) return;
    showPreview(input.files[0]);
    searchUpload();
  });

  form.addEventListener("submit", (event) => {
    event.preventDefault();
    if (input.files.length) searchUpload();
    else input.click();
  });

  for (const type of ["dragenter", "dragover"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.add("dragging");
    });
  }
  for (const type of ["dragleave", "drop"]) {
    dropzone.addEventListener(type, (event) => {
      event.preventDefault();
      dropzone.classList.remove("dragging");
    });
  }
  dropzone.addEventListener("drop", (event) => {
    const files = event.dataTransfer && event.dataTransfer.files;
    if (!files || !files.length) return;
    input.files = files;
    showPreview(files[0]);
    searchUpload();
  });

  // Paste an image (a screenshot, an image copied in another page) anywhere on the page.
  document.addEventListener("paste", (event) => {
    const files = event.clipboardData ? [...event.clipboardData.files] : [];
    const image = files.find((file) => file.type.startsWith("image/"));
    if (!image) return;
    event.preventDefault();
    const transfer = new DataTransfer();
    transfer.items.add(image);
    input.files = transfer.files;
    showPreview(image);
    searchUpload();
  });

  // "More like this": a click on a result searches with it, by id (nothing is uploaded).
  results.addEventListener("click", (event) => {
    const page = event.target.closest(".more-page");
    if (page && event.button === 0 && !event.metaKey && !event.ctrlKey && !event.shiftKey) {
      event.preventDefault();
      morePage(page);
      return;
    }
    const link = event.target.closest("a.more");
    if (!link || event.button !== 0 || event.metaKey || event.ctrlKey || event.shiftKey) return;
    const id = new URL(link.href).searchParams.get("id");
    if (id === null) return;
    event.preventDefault();
    searchById(id, true);
    window.scrollTo({ top: 0, behavior: "smooth" });
  });

  kSelect.addEventListener("change", () => {
    const summary = results.querySelector("[data-query-kind]");
    if (summary && summary.dataset.queryKind === "id") searchById(summary.dataset.queryId, false);
    else if (input.files.length) searchUpload();
  });

  window.addEventListener("popstate", (event) => {
    clearPreview();
    if (event.state && event.state.results) {
      results.innerHTML = event.state.results;
      const summary = results.querySelector("[data-k]");
      if (summary && kSelect.querySelector(`option[value="${summary.dataset.k}"]`)) {
        kSelect.value = summary.dataset.k; // the k these results were asked with
      }
    } else load(location.href).then(remember);
  });
  remember(); // the page as the server rendered it

  // Pixelated scaling suits small images only: smooth the ones larger than their box.
  function settle(image) {
    if (image.naturalWidth > image.clientWidth) image.classList.add("smooth");
  }
  document.addEventListener("load", (event) => {
    if (event.target instanceof HTMLImageElement && event.target.classList.contains("pixel")) {
      settle(event.target);
    }
  }, true);
  document.querySelectorAll("img.pixel").forEach((image) => { if (image.complete) settle(image); });
})();
