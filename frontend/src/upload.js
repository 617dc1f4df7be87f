// Resumable uploads (tus) for the capture and submission pages. Each file is sent in small
// chunks; when the connection drops, the upload waits for it to come back and continues from
// the offset the server holds, also after the page is reloaded (the fingerprint is kept in
// localStorage). When every file is in, the form itself is sent and the page moves on to the
// submission's report.
import * as tus from "tus-js-client";

const csrfToken = () => document.querySelector('meta[name="csrf-token"]')?.content || "";

function humanBytes(bytes) {
  const units = ["B", "KB", "MB", "GB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1000 && unit < units.length - 1) {
    value /= 1000;
    unit += 1;
  }
  return `${value.toFixed(unit ? 1 : 0)} ${units[unit]}`;
}

class Uploader {
  constructor(form) {
    this.form = form;
    this.text = form.dataset; // data-msg-* carry the page's language
    this.list = form.querySelector("[data-file-list]");
    this.overall = form.querySelector("[data-overall]");
    this.status = form.querySelector("[data-upload-status]");
    this.button = form.querySelector("[type=submit]");
    this.sent = new Map();
    this.total = 0;
    this.waiting = [];
    this.announced = -1;
    // Files already on the server, kept when a later step fails, so nothing is sent twice.
    this.finished = new Map();
    // One key per form: a form sent again (a retry after a dropped answer) makes no second
    // submission.
    this.key = window.crypto?.randomUUID?.() || `${Date.now()}-${Math.random()}`.slice(2);
    window.addEventListener("online", () => this.resumeWaiting());
    form.addEventListener("submit", (event) => this.submit(event));
    form.querySelector("[data-locate]")?.addEventListener("click", () => this.locate());
  }

  say(text) {
    if (this.status) this.status.textContent = text;
  }

  selectedFiles() {
    const files = [];
    for (const input of this.form.querySelectorAll("input[type=file]")) {
      for (const file of input.files) files.push(file);
    }
    return files;
  }

  row(file) {
    const item = document.createElement("li");
    const name = document.createElement("span");
    name.textContent = file.webkitRelativePath || file.name;
    const bar = document.createElement("progress");
    bar.max = file.size || 1;
    bar.value = 0;
    bar.setAttribute("aria-label", file.name);
    const state = document.createElement("span");
    state.className = "file-state";
    item.append(name, " ", bar, " ", state);
    this.list?.append(item);
    return { item, bar, state };
  }

  showProgress() {
    let sent = 0;
    for (const value of this.sent.values()) sent += value;
    if (this.overall) {
      this.overall.max = this.total || 1;
      this.overall.value = sent;
    }
    const percent = this.total ? Math.floor((sent / this.total) * 100) : 100;
    this.form.dataset.percent = String(percent);
    // The bars move all the time; the spoken status only every tenth, not on every chunk.
    if (Math.floor(percent / 10) !== this.announced) {
      this.announced = Math.floor(percent / 10);
      this.say(
        `${this.text.msgUploading} ${humanBytes(sent)} / ${humanBytes(this.total)} (${percent} %)`,
      );
    }
  }

  // Network trouble never ends an upload: it waits for the connection and goes on. Only the
  // server saying no (a 4xx other than conflict/locked/too-many) does.
  static refused(error) {
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
    return status >= 400 && status < 500 && ![409, 423, 429].includes(status);
  }

  // Why the server said no, in the page's language where the status tells (the server's own
  // words, in English, follow for the rest).
  refusal(error) {
    const response = error.originalResponse;
    const status = response ? response.getStatus() : 0;
    const known = {
      401: this.text.msgSignedOut,
      403: this.text.msgSignedOut,
      410: this.text.msgExpired,
      413: this.text.msgTooLarge,
    }[status];
    if (known) return known;
    let detail = "";
    try {
      detail = JSON.parse(response?.getBody() || "{}").detail || "";
    } catch {
      detail = "";
    }
    return `${this.text.msgRefused} ${typeof detail === "string" ? detail : ""}`.trim();
  }

  resumeWaiting() {
    const waiting = this.waiting.splice(0);
    for (const upload of waiting) upload.start();
  }

  uploadOne(file, row) {
    return new Promise((resolve, reject) => {
      const upload = new tus.Upload(file, {
        endpoint: this.form.dataset.uploadEndpoint,
        chunkSize: Number(this.form.dataset.chunkBytes || 512 * 1024),
        retryDelays: [0, 1000, 2000, 4000, 8000],
        headers: { "X-CSRF-Token": csrfToken() },
        metadata: {
          filename: file.name,
          filetype: file.type || "application/octet-stream",
          relativePath: file.webkitRelativePath || file.name,
        },
        storeFingerprintForResuming: true,
        removeFingerprintOnSuccess: true,
        onShouldRetry: (error) => {
          if (Uploader.refused(error)) return false;
          row.state.textContent = this.text.msgRetrying;
          this.say(this.text.msgRetrying);
          return true;
        },
        onProgress: (sent) => {
          row.bar.value = sent;
          row.state.textContent = "";
          this.sent.set(row, sent);
          this.showProgress();
        },
        onSuccess: () => {
          row.bar.value = row.bar.max;
          row.state.textContent = "✓";
          row.item.dataset.done = "true";
          resolve(upload.url.split("/").pop());
        },
        onError: (error) => {
          if (Uploader.refused(error)) {
            row.state.textContent = this.refusal(error);
            reject(error);
            return;
          }
          // Out of quick retries: wait for the connection (or half a minute) and go on.
          row.state.textContent = this.text.msgOffline;
          this.say(this.text.msgOffline);
          this.waiting.push(upload);
          setTimeout(() => {
            if (navigator.onLine) this.resumeWaiting();
          }, 30000);
        },
      });
      upload.findPreviousUploads().then((previous) => {
        if (previous.length) upload.resumeFromPreviousUpload(previous[0]);
        upload.start();
      });
    });
  }

  locate() {
    const note = this.form.querySelector("[data-location-note]");
    if (!navigator.geolocation) {
      note.textContent = this.text.msgNoGeolocation;
      return;
    }
    note.textContent = this.text.msgLocating;
    navigator.geolocation.getCurrentPosition(
      (position) => {
        this.form.elements.latitude.value = position.coords.latitude.toFixed(7);
        this.form.elements.longitude.value = position.coords.longitude.toFixed(7);
        this.form.elements.accuracy_m.value = Math.round(position.coords.accuracy);
        note.textContent = this.text.msgLocated;
      },
      () => {
        note.textContent = this.text.msgLocationRefused;
      },
      { enableHighAccuracy: true, timeout: 30000 },
    );
  }

  async send(fields) {
    // The form posts retry on network errors too: the uploads are safe on the server, and the
    // submission key makes a repeated post harmless.
    for (let attempt = 0; ; attempt += 1) {
      try {
        return await fetch(this.form.action, {
          method: "POST",
          body: fields,
          headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
          credentials: "same-origin",
        });
      } catch (error) {
        this.say(this.text.msgOffline);
        await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 1000 * 2 ** attempt)));
      }
    }
  }

  fields() {
    const fields = new FormData(this.form);
    for (const input of this.form.querySelectorAll("input[type=file]")) fields.delete(input.name);
    return fields;
  }

  clearProblems() {
    this.form.querySelectorAll(".field-error").forEach((note) => note.remove());
    this.form.querySelectorAll("[aria-invalid]").forEach((input) => {
      input.removeAttribute("aria-invalid");
      input.removeAttribute("aria-describedby");
    });
  }

  // The server's reasons next to the fields they concern, announced, the first one focused.
  showProblems(answer) {
    let first = null;
    for (const [name, message] of Object.entries(answer.fields || {})) {
      let input = this.form.elements[name];
      if (input && input.type === "hidden") input = this.form.querySelector("[data-locate]");
      if (!input || !input.after) continue;
      const note = document.createElement("p");
      note.className = "error field-error";
      note.id = `${name}-problem`;
      note.textContent = message;
      input.setAttribute("aria-invalid", "true");
      input.setAttribute("aria-describedby", note.id);
      input.after(note);
      first = first || input;
    }
    this.say(answer.detail || "");
    first?.focus();
  }

  async uploadAll(files) {
    // A few at once: a phone's connection is shared fairly, and a folder of thousands of
    // files does not open thousands of requests.
    const rows = files.map((file) => this.row(file));
    const ids = new Array(files.length);
    let next = 0;
    const work = async () => {
      while (next < files.length) {
        const index = next;
        next += 1;
        const file = files[index];
        if (this.finished.has(file)) {
          ids[index] = this.finished.get(file);
          this.sent.set(rows[index], file.size);
          rows[index].bar.value = rows[index].bar.max;
          rows[index].item.dataset.done = "true";
          continue;
        }
        ids[index] = await this.uploadOne(file, rows[index]);
        this.finished.set(file, ids[index]);
      }
    };
    await Promise.all(Array.from({ length: Math.min(3, files.length) }, work));
    return ids;
  }

  async submit(event) {
    event.preventDefault();
    if (!this.form.reportValidity()) return;
    const files = this.selectedFiles();
    if (!files.length) {
      this.say(this.text.msgNoFiles);
      return;
    }
    this.button.disabled = true;
    this.clearProblems();
    try {
      // The form is checked before any file is sent.
      const check = this.fields();
      check.append("check_only", "1");
      const checked = await this.send(check);
      if (!checked.ok) {
        this.showProblems(await checked.json().catch(() => ({ detail: `${checked.status}` })));
        return;
      }
      this.list?.replaceChildren();
      this.total = files.reduce((sum, file) => sum + file.size, 0);
      this.sent.clear();
      this.announced = -1;
      let ids;
      try {
        ids = await this.uploadAll(files);
      } catch (error) {
        this.say(this.refusal(error));
        return;
      }
      this.say(this.text.msgSubmitting);
      const fields = this.fields();
      for (const id of ids) fields.append("upload", id);
      fields.append("submission_key", this.key);
      const response = await this.send(fields);
      const answer = await response.json().catch(() => ({}));
      if (!response.ok) {
        this.showProblems(answer.detail ? answer : { detail: `${response.status}` });
        return;
      }
      this.form.dataset.submitted = "true";
      window.location.assign(answer.href);
    } finally {
      if (this.form.dataset.submitted !== "true") this.button.disabled = false;
    }
  }
}

document.querySelectorAll("[data-upload-form]").forEach((form) => new Uploader(form));
