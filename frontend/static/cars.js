/* ridehail live map: the cars. One canvas marker per car, moved smoothly between pings, updated
 * once per animation frame. Car ids and ride ids are data: they never become HTML here (the
 * popup is built by panel.js with text nodes). Loaded before map.js; plain ES5-ish, no build step. */
(function () {
  'use strict';

  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#8c8c8c', '#9467bd']; // available, to_pickup, on_trip, offline, offered
  var STATUS = ['available', 'to pickup', 'on trip', 'offline', 'offered'];
  var CAR_TIMEOUT_MS = 15000; // a car silent this long is removed from the map
  var MAX_INTERP_MS = 1500;
  var BIG_FLEET = 3000;

  // isMine(car) -> whether the logged-in rider's ride uses this car (drawn bigger, outlined)
  function create(map, isMine) {
    var cars = new Map();
    map.createPane('cars');
    map.getPane('cars').style.zIndex = 450;
    var renderer = L.canvas({ pane: 'cars', padding: 0.2 });

    function style(car) {
      var mine = isMine(car);
      car.marker.setStyle({
        fillColor: COLORS[car.status] || '#d62728', radius: mine ? 9 : 4.5,
        color: mine ? '#000000' : '#ffffff', weight: mine ? 3 : 1
      });
      if (mine) car.marker.bringToFront();
    }

    function apply(c, now) { // c = [id, lat, lon, status, ping_ts, ride_id, heading]
      var id = String(c[0]), car = cars.get(id);
      if (!car) {
        car = {
          id: id, lat: c[1], lon: c[2], fromLat: c[1], fromLon: c[2], toLat: c[1], toLon: c[2],
          t0: now, dur: 0, status: c[3], ts: c[4], ride: c[5], updated: now,
          marker: L.circleMarker([c[1], c[2]], {
            renderer: renderer, pane: 'cars', radius: 4.5, weight: 1, color: '#ffffff',
            fillColor: COLORS[c[3]] || '#d62728', fillOpacity: 0.95, interactive: false
          }).addTo(map)
        };
        cars.set(id, car);
        return;
      }
      car.fromLat = car.lat; car.fromLon = car.lon; car.toLat = c[1]; car.toLon = c[2];
      car.dur = Math.min(MAX_INTERP_MS, Math.max(50, now - car.updated));
      car.t0 = now; car.updated = now;
      if (car.status !== c[3] || car.ride !== c[5]) { car.status = c[3]; car.ride = c[5]; style(car); }
      car.ts = c[4];
    }

    var lastStep = 0;
    function animate() { // once per animation frame: interpolate every moving car
      var now = performance.now();
      // thousands of markers: move them at 10 Hz instead of every frame (one canvas redraw each)
      if (cars.size > BIG_FLEET && now - lastStep < 100) { requestAnimationFrame(animate); return; }
      lastStep = now;
      var moved = 0;
      cars.forEach(function (car, id) {
        if (now - car.updated > CAR_TIMEOUT_MS) { map.removeLayer(car.marker); cars.delete(id); return; }
        if (car.lat === car.toLat && car.lon === car.toLon) return;
        var f = car.dur > 0 ? Math.min(1, (now - car.t0) / car.dur) : 1;
        car.lat = car.fromLat + (car.toLat - car.fromLat) * f;
        car.lon = car.fromLon + (car.toLon - car.fromLon) * f;
        // setLatLng() would queue one redraw region per marker; move them all, then repaint the
        // cars' canvas once (Leaflet 1.9.4 is pinned; these are its CircleMarker/Canvas internals)
        var m = car.marker;
        m._latlng = L.latLng(car.lat, car.lon);
        if (m._map) { m._project(); moved++; }
      });
      if (moved && renderer._map) {
        renderer._redrawBounds = null;
        renderer._redraw();
      }
      requestAnimationFrame(animate);
    }
    requestAnimationFrame(animate);

    function at(latlng) { // the car drawn within 10 px of a click, if any
      var p = map.latLngToContainerPoint(latlng), best = null, bestD = 10;
      cars.forEach(function (car) {
        var d = p.distanceTo(map.latLngToContainerPoint([car.lat, car.lon]));
        if (d < bestD) { bestD = d; best = car; }
      });
      return best;
    }

    function restyle(id) { if (id && cars.has(id)) style(cars.get(id)); }

    function positions() {
      var out = {};
      cars.forEach(function (c, id) { out[id] = [c.toLat, c.toLon]; });
      return out;
    }

    return {
      apply: apply, at: at, restyle: restyle, positions: positions,
      count: function () { return cars.size; },
      statusName: function (car) { return STATUS[car.status] || 'unknown'; }
    };
  }

  window.Ridehail = window.Ridehail || {};
  window.Ridehail.cars = { create: create };
})();
