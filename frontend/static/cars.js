/* ridehail live map: the cars, moved smoothly between pings and drawn once per animation frame.
 * Two drawers share the state here (the cars, interpolation, time-out, hit test):
 *   'canvas'  (default) one <canvas> in the cars' pane; every frame projects every car, copies one
 *             pre-rendered dot per car into one pixel buffer and puts it on the canvas once: no
 *             Leaflet layer and no canvas call per car;
 *   'markers' one L.circleMarker per car on a Leaflet canvas renderer (the earlier drawer, kept
 *             for comparison: `/?renderer=markers`; above 3,000 cars it moves them at 10 Hz).
 * Car ids and ride ids are data: they never become HTML here (the popup is built by panel.js with
 * text nodes). Loaded before map.js; plain ES5-ish, no build step. */
(function () {
  'use strict';

  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#8c8c8c', '#9467bd']; // available, to_pickup, on_trip, offline, offered
  var UNKNOWN = '#d62728';
  var STATUS = ['available', 'to pickup', 'on trip', 'offline', 'offered'];
  var CAR_TIMEOUT_MS = 15000; // a car silent this long is removed from the map
  var MAX_INTERP_MS = 1500;
  var BIG_FLEET = 3000;
  var RADIUS = 4.5, MINE_RADIUS = 9;

  // -- 'markers': one Leaflet circle marker per car --------------------------------------------------
  function markerDrawer(map, isMine) {
    var renderer = L.canvas({ pane: 'cars', padding: 0.2 });
    var drawer = { name: 'markers', drawn: 0, draws: 0, everyFrame: false };

    function style(car) {
      var mine = isMine(car);
      car.marker.setStyle({
        fillColor: COLORS[car.status] || UNKNOWN, radius: mine ? MINE_RADIUS : RADIUS,
        color: mine ? '#000000' : '#ffffff', weight: mine ? 3 : 1
      });
      if (mine) car.marker.bringToFront();
    }
    drawer.add = function (car) {
      car.marker = L.circleMarker([car.lat, car.lon], {
        renderer: renderer, pane: 'cars', radius: RADIUS, weight: 1, color: '#ffffff',
        fillColor: COLORS[car.status] || UNKNOWN, fillOpacity: 0.95, interactive: false
      }).addTo(map);
    };
    drawer.remove = function (car) { map.removeLayer(car.marker); };
    drawer.restyle = style;
    // setLatLng() would queue one redraw region per marker; move them all, then repaint the cars'
    // canvas once (Leaflet 1.9.4 is pinned; these are its CircleMarker/Canvas internals)
    drawer.move = function (car) {
      var m = car.marker;
      m._latlng = L.latLng(car.lat, car.lon);
      if (m._map) { m._project(); return true; }
      return false;
    };
    drawer.draw = function (cars, moved) {
      if (!moved || !renderer._map) return;
      renderer._redrawBounds = null;
      renderer._redraw();
      drawer.drawn = cars.size;
      drawer.draws++;
    };
    return drawer;
  }

  // -- 'canvas': one canvas, every car stamped into one pixel buffer ----------------------------------
  // Why: measured once (headless Chromium, software rendering, this 2-core machine under load),
  // 10,000 drawImage() calls took ~98 ms a frame and one path of 10,000 arc()s ~21 ms; copying a
  // pre-rendered dot's pixels into one ImageData per car and putting it once took ~7 ms.
  function dot(radius, fill, stroke, weight) { // a car drawn once with the canvas API, as pixel runs
    var dpr = window.devicePixelRatio || 1, half = Math.ceil((radius + weight) * dpr), size = 2 * half + 1;
    var c = document.createElement('canvas');
    c.width = c.height = size;
    var g = c.getContext('2d');
    g.setTransform(dpr, 0, 0, dpr, half, half);
    g.beginPath();
    g.arc(0, 0, radius, 0, 2 * Math.PI);
    g.fillStyle = fill; g.fill();
    g.lineWidth = weight; g.strokeStyle = stroke; g.stroke();
    var px = new Uint32Array(g.getImageData(0, 0, size, size).data.buffer), dx = [], dy = [], v = [];
    for (var i = 0; i < px.length; i++) {
      if ((px[i] >>> 24) >= 96) { // skip the faint antialiasing fringe (alpha < 96)
        dx.push(i % size - half); dy.push(Math.floor(i / size) - half); v.push(px[i]);
      }
    }
    return { half: half, dx: new Int16Array(dx), dy: new Int16Array(dy), v: new Uint32Array(v) };
  }

  function canvasDrawer(map, isMine) {
    var pane = map.getPane('cars');
    pane.style.pointerEvents = 'none';
    var canvas = L.DomUtil.create('canvas', 'rh-cars-canvas', pane);
    canvas.style.position = 'absolute';
    var ctx = canvas.getContext('2d');
    var image = null, buf = null;
    var dots = COLORS.map(function (c) { return dot(RADIUS, c, '#ffffff', 1); });
    var unknownDot = dot(RADIUS, UNKNOWN, '#ffffff', 1);
    var mineDots = COLORS.map(function (c) { return dot(MINE_RADIUS, c, '#000000', 3); });
    var mineUnknown = dot(MINE_RADIUS, UNKNOWN, '#000000', 3);
    var drawer = { name: 'canvas', drawn: 0, draws: 0, everyFrame: true, dirty: true };
    var zooming = false;
    var D = Math.PI / 180, MAX_LAT = 85.0511287798;

    function dirty() { drawer.dirty = true; }
    map.on('move resize viewreset', dirty);
    // during Leaflet's zoom animation the projection still says the old zoom: hide, draw after
    map.on('zoomstart', function () { zooming = true; canvas.style.visibility = 'hidden'; });
    map.on('zoomend', function () { zooming = false; canvas.style.visibility = ''; dirty(); });

    function stamp(d, x, y, w, h) { // x, y: device pixels (integers)
      var dx = d.dx, dy = d.dy, v = d.v, n = v.length, k;
      if (x - d.half >= 0 && y - d.half >= 0 && x + d.half < w && y + d.half < h) {
        var base = y * w + x;
        for (k = 0; k < n; k++) buf[base + dy[k] * w + dx[k]] = v[k];
        return;
      }
      for (k = 0; k < n; k++) { // near an edge: clip pixel by pixel
        var xx = x + dx[k], yy = y + dy[k];
        if (xx >= 0 && yy >= 0 && xx < w && yy < h) buf[yy * w + xx] = v[k];
      }
    }

    drawer.add = dirty;
    drawer.remove = dirty;
    drawer.restyle = dirty;
    drawer.move = function () { return true; };
    drawer.draw = function (cars, moved) {
      if (zooming || !(moved || drawer.dirty)) return;
      drawer.dirty = false;
      var size = map.getSize(), dpr = window.devicePixelRatio || 1;
      var w = Math.round(size.x * dpr), h = Math.round(size.y * dpr);
      if (w < 1 || h < 1) return;
      if (!image || canvas.width !== w || canvas.height !== h) {
        canvas.width = w; canvas.height = h;
        canvas.style.width = size.x + 'px'; canvas.style.height = size.y + 'px';
        image = ctx.createImageData(w, h);
        buf = new Uint32Array(image.data.buffer);
      }
      // the canvas covers the map container: keep its top-left there while the map pane pans
      var topLeft = map.containerPointToLayerPoint([0, 0]);
      L.DomUtil.setPosition(canvas, topLeft);
      var origin = map.getPixelOrigin(), scale = 256 * Math.pow(2, map.getZoom());
      var ox = origin.x + topLeft.x, oy = origin.y + topLeft.y, lim = MINE_RADIUS + 3;
      buf.fill(0);
      var n = 0, mine = [];
      cars.forEach(function (car) {
        // Leaflet's EPSG:3857 (Web Mercator) projection, inlined: map.project() per car allocates
        var lat = Math.max(-MAX_LAT, Math.min(MAX_LAT, car.lat)), s = Math.sin(lat * D);
        var x = scale * (car.lon / 360 + 0.5) - ox;
        var y = scale * (0.5 - Math.log((1 + s) / (1 - s)) / (4 * Math.PI)) - oy;
        if (x < -lim || y < -lim || x > size.x + lim || y > size.y + lim) return;
        if (isMine(car)) { mine.push(car, x, y); return; }
        stamp(dots[car.status] || unknownDot, Math.round(x * dpr), Math.round(y * dpr), w, h);
        n++;
      });
      for (var i = 0; i < mine.length; i += 3) { // the rider's car: bigger, outlined, on top
        stamp(mineDots[mine[i].status] || mineUnknown, Math.round(mine[i + 1] * dpr), Math.round(mine[i + 2] * dpr), w, h);
        n++;
      }
      ctx.putImageData(image, 0, 0);
      drawer.drawn = n;
      drawer.draws++;
    };
    return drawer;
  }

  // isMine(car) -> whether the logged-in rider's ride uses this car (drawn bigger, outlined);
  // kind: 'canvas' (default) or 'markers'
  function create(map, isMine, kind) {
    var cars = new Map();
    map.createPane('cars');
    map.getPane('cars').style.zIndex = 450;
    var drawer = kind === 'markers' ? markerDrawer(map, isMine) : canvasDrawer(map, isMine);

    function apply(c, now) { // c = [id, lat, lon, status, ping_ts, ride_id, heading]
      var id = String(c[0]), car = cars.get(id);
      if (!car) {
        car = {
          id: id, lat: c[1], lon: c[2], fromLat: c[1], fromLon: c[2], toLat: c[1], toLon: c[2],
          t0: now, dur: 0, status: c[3], ts: c[4], ride: c[5], updated: now
        };
        cars.set(id, car);
        drawer.add(car);
        return;
      }
      car.fromLat = car.lat; car.fromLon = car.lon; car.toLat = c[1]; car.toLon = c[2];
      car.dur = Math.min(MAX_INTERP_MS, Math.max(50, now - car.updated));
      car.t0 = now; car.updated = now;
      if (car.status !== c[3] || car.ride !== c[5]) { car.status = c[3]; car.ride = c[5]; drawer.restyle(car); }
      car.ts = c[4];
    }

    var lastStep = 0, timing = { steps: 0, ms: 0 }; // time spent in the cars' steps (bench hook)
    function animate() { // once per animation frame: interpolate every moving car, draw once
      var now = performance.now();
      // thousands of Leaflet markers: move them at 10 Hz instead of every frame
      if (!drawer.everyFrame && cars.size > BIG_FLEET && now - lastStep < 100) { requestAnimationFrame(animate); return; }
      lastStep = now;
      var moved = 0;
      cars.forEach(function (car, id) {
        if (now - car.updated > CAR_TIMEOUT_MS) { drawer.remove(car); cars.delete(id); return; }
        if (car.lat === car.toLat && car.lon === car.toLon) return;
        var f = car.dur > 0 ? Math.min(1, (now - car.t0) / car.dur) : 1;
        car.lat = car.fromLat + (car.toLat - car.fromLat) * f;
        car.lon = car.fromLon + (car.toLon - car.fromLon) * f;
        if (drawer.move(car)) moved++;
      });
      drawer.draw(cars, moved);
      timing.steps++; timing.ms += performance.now() - now;
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

    function restyle(id) { if (id && cars.has(id)) drawer.restyle(cars.get(id)); }

    function positions() {
      var out = {};
      cars.forEach(function (c, id) { out[id] = [c.toLat, c.toLon]; });
      return out;
    }

    function inView() { // cars whose drawn position is inside the map's current bounds
      var b = map.getBounds(), n = 0;
      cars.forEach(function (c) { if (b.contains([c.lat, c.lon])) n++; });
      return n;
    }

    return {
      apply: apply, at: at, restyle: restyle, positions: positions, inView: inView,
      renderer: drawer.name,
      drawn: function () { return drawer.drawn; },
      draws: function () { return drawer.draws; },
      timing: function () { return { steps: timing.steps, ms: timing.ms }; },
      count: function () { return cars.size; },
      statusName: function (car) { return STATUS[car.status] || 'unknown'; }
    };
  }

  window.Ridehail = window.Ridehail || {};
  window.Ridehail.cars = { create: create };
})();
