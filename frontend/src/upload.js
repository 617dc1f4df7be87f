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
    this.say(`${this.text.msgUploading} ${humanBytes(sent)} / ${humanBytes(this.total)} (${percent} %)`);
  }

  // Network trouble never ends an upload: it waits for the connection and goes on. Only the
  // server saying no (a 4xx other than conflict/locked/too-many) does.
  static refused(error) {
    const status = error.originalResponse ? error.originalResponse.getStatus() : 0;
    return status >= 400 && status < 500 && ![409, 423, 429].includes(status);
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
            row.state.textContent = this.text.msgRefused;
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
    // The final form post retries on network errors too: the uploads are safe on the server.
    for (let attempt = 0; ; attempt += 1) {
      try {
        const response = await fetch(this.form.action, {
          method: "POST",
          body: fields,
          headers: { "X-CSRF-Token": csrfToken(), Accept: "application/json" },
          credentials: "same-origin",
        });
        return response;
      } catch (error) {
        this.say(this.text.msgOffline);
        await new Promise((resolve) => setTimeout(resolve, Math.min(30000, 1000 * 2 ** attempt)));
      }
    }
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
    this.list?.replaceChildren();
    this.total = files.reduce((sum, file) => sum + file.size, 0);
    this.sent.clear();
    let ids;
    try {
      ids = await Promise.all(files.map((file) => this.uploadOne(file, this.row(file))));
    } catch (error) {
      this.say(`${this.text.msgRefused} ${error.originalResponse?.getBody() || ""}`);
      this.button.disabled = false;
      return;
    }
    this.say(this.text.msgSubmitting);
    const fields = new FormData(this.form);
    for (const input of this.form.querySelectorAll("input[type=file]")) fields.delete(input.name);
    for (const id of ids) fields.append("upload", id);
    const response = await this.send(fields);
    const answer = await response.json().catch(() => ({}));
    if (!response.ok) {
      this.say(answer.detail || `${response.status}`);
      this.button.disabled = false;
      return;
    }
    this.form.dataset.submitted = "true";
    window.location.assign(answer.href);
  }
}

document.querySelectorAll("[data-upload-form]").forEach((form) => new Uploader(form));
