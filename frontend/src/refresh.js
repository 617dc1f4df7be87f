// Pages that wait on work in the background (an ingest, a research package) ask the API how it
// stands and reload only when it has changed, instead of refreshing on a timer: a timed refresh
// moves keyboard and screen-reader users back to the top while they read (WCAG 2.2.1).
const watched = document.querySelectorAll("[data-watch-url]");

async function check(element) {
  try {
    const response = await fetch(element.dataset.watchUrl, {
      headers: { Accept: "application/json" },
      credentials: "same-origin",
    });
    if (response.ok) {
      const answer = await response.json();
      if (answer.status !== element.dataset.watchStatus) {
        window.location.reload();
        return;
      }
    }
  } catch (error) {
    // Offline for a moment: ask again later.
  }
  setTimeout(() => check(element), Number(element.dataset.watchEvery || 3000));
}

watched.forEach((element) => setTimeout(() => check(element), 1000));
