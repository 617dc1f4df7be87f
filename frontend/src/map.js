// The catalogue's map. It only ever receives coarse grid cells (the server never sends a
// capture point to roles without precise_location), and draws them as cells, not pins, so that
// the picture does not suggest more precision than there is.
import L from "leaflet";
import "leaflet/dist/leaflet.css";

function setUp(element) {
  const cells = JSON.parse(element.dataset.cells || "[]");
  const map = L.map(element, { scrollWheelZoom: false, worldCopyJump: true });
  if (element.dataset.tiles) {
    L.tileLayer(element.dataset.tiles, {
      maxZoom: 10, // closer than a cell's size would only invite guessing
      attribution: element.dataset.attribution || "",
    }).addTo(map);
  }
  const bounds = [];
  for (const cell of cells) {
    const box = [
      [cell.south, cell.west],
      [cell.north, cell.east],
    ];
    bounds.push(...box);
    const link = document.createElement("a");
    link.href = cell.href;
    link.textContent = cell.title;
    L.rectangle(box, { weight: 1, color: "#7a3b00", fillOpacity: 0.25 })
      .bindPopup(link)
      .addTo(map);
  }
  const area = (element.dataset.bbox || "").split(",").map(Number);
  if (area.length === 4 && area.every(Number.isFinite)) {
    // The area searched stays in view, so the visitor can move it and search again.
    const [west, south, east, north] = area;
    map.fitBounds([
      [south, west],
      [north, east <= west ? east + 360 : east],
    ]);
  } else if (bounds.length) map.fitBounds(bounds, { maxZoom: 8, padding: [20, 20] });
  else map.setView([48.5, 31], 5);
  offerAreaSearch(map, element);
  element.dataset.ready = String(cells.length);
}

// "Search the area shown on the map": the map's bounds become the search's bbox. Without
// this script the button stays hidden and the form works as before.
function offerAreaSearch(map, element) {
  const button = document.querySelector("[data-search-area]");
  const field = document.getElementById("bbox");
  if (!button || !field || !field.form) return;
  button.hidden = false;
  button.addEventListener("click", () => {
    const shown = map.getBounds();
    const round = (value) => Math.round(value * 1e4) / 1e4;
    field.value = [shown.getWest(), shown.getSouth(), shown.getEast(), shown.getNorth()]
      .map(round)
      .join(",");
    element.dataset.searchedArea = field.value;
    field.form.submit();
  });
}

document.querySelectorAll("[data-map]").forEach(setUp);
