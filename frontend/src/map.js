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
  if (bounds.length) map.fitBounds(bounds, { maxZoom: 8, padding: [20, 20] });
  else map.setView([48.5, 31], 5);
  element.dataset.ready = String(cells.length);
}

document.querySelectorAll("[data-map]").forEach(setUp);
