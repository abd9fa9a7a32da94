/* ridehail live map: surge pricing, one hexagon per H3 cell coloured by its multiplier (the
 * polygons come from the server: the browser has no H3). Only numbers and coordinates are used. */
(function () {
  'use strict';

  function color(m) { // 1.0 yellow -> 2.0 orange -> 3.0+ red
    var f = Math.max(0, Math.min(1, (m - 1) / 2));
    return 'rgb(255,' + Math.round(220 - 190 * f) + ',' + Math.round(60 - 40 * f) + ')';
  }

  function create(map) {
    map.createPane('surge');
    map.getPane('surge').style.zIndex = 420;
    map.getPane('surge').style.pointerEvents = 'none';
    var layer = L.layerGroup().addTo(map);
    var cells = new Map(); // cell -> { multiplier, polygon }
    L.control.layers(null, { 'surge pricing': layer }, { collapsed: false, position: 'topleft' }).addTo(map);

    function onSurge(msg) { // {"t":"surge","c":[[cell, multiplier, polygon|null], ...]}
      var rows = Array.isArray(msg.c) ? msg.c : [];
      for (var i = 0; i < rows.length; i++) {
        var cell = String(rows[i][0]), m = Number(rows[i][1]), boundary = rows[i][2];
        if (!isFinite(m)) continue;
        var known = cells.get(cell);
        if (!known) {
          if (!Array.isArray(boundary)) continue; // polygon unknown: the next snapshot brings it
          known = {
            multiplier: m,
            polygon: L.polygon(boundary, { pane: 'surge', weight: 1, color: '#b35900', interactive: false })
          };
          cells.set(cell, known);
          layer.addLayer(known.polygon);
        }
        known.multiplier = m;
        known.polygon.setStyle({
          fillColor: color(m), fillOpacity: m > 1 ? 0.15 + Math.min(0.35, (m - 1) * 0.2) : 0,
          opacity: m > 1 ? 0.6 : 0
        });
      }
    }

    return {
      onSurge: onSurge,
      snapshot: function () {
        var out = {};
        cells.forEach(function (v, cell) { out[cell] = v.multiplier; });
        return out;
      },
      visible: function () { return map.hasLayer(layer); },
      drawn: function () { // hexagons on the map now, with their fill colours
        var out = {};
        cells.forEach(function (v, cell) { if (v.polygon._map) out[cell] = v.polygon.options.fillColor; });
        return out;
      }
    };
  }

  window.Ridehail = window.Ridehail || {};
  window.Ridehail.surge = { create: create };
})();
