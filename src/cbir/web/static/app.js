// cbir search page: drag and drop, a preview of the query, results without a page reload.
// The server renders the results fragment (escaped by Jinja); this script only swaps it in.
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

  function showPreview(file) {
    if (previewUrl) URL.revokeObjectURL(previewUrl);
    previewUrl = URL.createObjectURL(file);
    preview.src = previewUrl;
    preview.hidden = false;
    dropzone.classList.add("has-image");
  }

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

  async function load(url, options = {}) {
    results.setAttribute("aria-busy", "true");
    try {
      const response = await fetch(url, { ...options, headers: { "X-Partial": "1" } });
      const type = response.headers.get("Content-Type") || "";
      if (type.startsWith("text/html")) results.innerHTML = await response.text();
      else showError(`The server answered ${response.status} ${response.statusText}.`);
    } catch (error) {
      showError("The server could not be reached. Is `cbir serve` still running?");
    } finally {
      results.removeAttribute("aria-busy");
    }
  }

  function searchUpload() {
    if (!input.files.length) return;
    const limit = Number(form.dataset.maxBytes);
    if (limit && input.files[0].size > limit) {
      const mib = (size) => (size / 1048576).toFixed(1);
      showError(`That file is ${mib(input.files[0].size)} MB; the limit is ${mib(limit)} MB.`);
      return;
    }
    if (location.search) history.pushState(null, "", form.action);
    load(form.action, { method: "POST", body: new FormData(form) });
  }

  function searchById(id, push) {
    const url = new URL(form.action, location.href);
    url.searchParams.set("id", id);
    url.searchParams.set("k", kSelect.value);
    if (push) history.pushState(null, "", url);
    else history.replaceState(null, "", url);
    clearPreview();
    load(url);
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

  // "More like this": a click on a result searches with it, by id (nothing is uploaded).
  results.addEventListener("click", (event) => {
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

  window.addEventListener("popstate", () => load(location.href));

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
