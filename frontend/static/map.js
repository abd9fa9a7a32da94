/* ridehail live map: websocket feed -> coalesced car state -> one canvas update per animation frame.
 * Frame format: docs/gateway.md. Test hooks: window.__ridehail (carCount, positions, stats, ride).
 * Plain ES5-ish browser JavaScript, no build step. */
(function () {
  'use strict';

  var COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#8c8c8c', '#9467bd']; // available, to_pickup, on_trip, offline, offered
  var STATUS = ['available', 'to pickup', 'on trip', 'offline', 'offered'];
  var ROAD_STYLE = {
    motorway: ['#e8923a', 3.5], trunk: ['#f0a94f', 3], primary: ['#f7c96b', 2.6],
    secondary: ['#f7d98b', 2.2], tertiary: ['#ffffff', 1.8]
  };
  var CAR_TIMEOUT_MS = 15000; // a car silent this long is removed from the map
  var MAX_INTERP_MS = 1500;
  var BIG_FLEET = 3000;

  function $(id) { return document.getElementById(id); }

  function percentile(sorted, p) {
    if (!sorted.length) return null;
    var i = Math.min(sorted.length - 1, Math.max(0, Math.ceil(p * sorted.length) - 1));
    return sorted[i];
  }

  function decodeJwt(token) {
    try {
      var part = token.split('.')[1].replace(/-/g, '+').replace(/_/g, '/');
      while (part.length % 4) part += '=';
      return JSON.parse(atob(part));
    } catch (e) { return null; }
  }

  function start(map, config) {
    var state = {
      ws: null, connected: false, retry: 0, frames: 0, framesAt: [], stats: {}, latencies: [],
      token: sessionStorage.getItem('ridehail.token'), claims: null,
      ride: null, pickup: null, pins: [], mode: 'connecting', lastBBox: null, errors: [], reconnects: 0
    };
    state.claims = state.token ? decodeJwt(state.token) : null;
    var cars = new Map();

    // -- layers ---------------------------------------------------------------------------------
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution(config.attribution);
    map.eachLayer(function (l) { // opt-in basemap: drop it if it never loads a tile (offline)
      if (l instanceof L.TileLayer) {
        var errors = 0, loaded = 0;
        l.on('tileload', function () { loaded++; });
        l.on('tileerror', function () { if (++errors >= 4 && loaded === 0 && map.hasLayer(l)) map.removeLayer(l); });
      }
    });
    var roadRenderer = L.canvas({ pane: 'roads', padding: 0.3 });
    fetch(config.roadsUrl).then(function (r) {
      if (!r.ok) throw new Error('roads: HTTP ' + r.status);
      return r.json();
    }).then(function (data) {
      L.geoJSON(data, {
        pane: 'roads', renderer: roadRenderer, interactive: false,
        style: function (f) {
          var s = ROAD_STYLE[String(f.properties.h || '').replace('_link', '')] || ['#ffffff', 1.2];
          return { color: s[0], weight: s[1], opacity: 0.95 };
        }
      }).addTo(map);
    }).catch(function (e) { message('road layer unavailable: ' + e.message); });

    map.createPane('cars');
    map.getPane('cars').style.zIndex = 450;
    var carRenderer = L.canvas({ pane: 'cars', padding: 0.2 });
    var pinLayer = L.layerGroup().addTo(map);

    // -- surge: one hexagon per H3 cell, coloured by multiplier (polygons come from the server) ------
    map.createPane('surge');
    map.getPane('surge').style.zIndex = 420;
    map.getPane('surge').style.pointerEvents = 'none';
    var surgeLayer = L.layerGroup().addTo(map);
    var surgeCells = new Map(); // cell -> { multiplier, polygon }
    L.control.layers(null, { 'surge pricing': surgeLayer }, { collapsed: false, position: 'topleft' }).addTo(map);

    function surgeColor(m) { // 1.0 yellow -> 2.0 orange -> 3.0+ red
      var f = Math.max(0, Math.min(1, (m - 1) / 2));
      return 'rgb(' + 255 + ',' + Math.round(220 - 190 * f) + ',' + Math.round(60 - 40 * f) + ')';
    }

    function onSurge(msg) {
      for (var i = 0; i < msg.c.length; i++) {
        var cell = msg.c[i][0], m = msg.c[i][1], boundary = msg.c[i][2];
        var known = surgeCells.get(cell);
        if (!known) {
          if (!boundary) continue; // polygon unknown: the next snapshot brings it
          known = {
            multiplier: m,
            polygon: L.polygon(boundary, { pane: 'surge', weight: 1, color: '#b35900', interactive: false })
          };
          surgeCells.set(cell, known);
          surgeLayer.addLayer(known.polygon);
        }
        known.multiplier = m;
        known.polygon.setStyle({
          fillColor: surgeColor(m), fillOpacity: m > 1 ? 0.15 + Math.min(0.35, (m - 1) * 0.2) : 0,
          opacity: m > 1 ? 0.6 : 0
        });
      }
    }

    // -- cars -----------------------------------------------------------------------------------
    function applyCar(c, now) {
      // c = [id, lat, lon, status, ping_ts, ride_id, heading]
      var id = c[0], car = cars.get(id);
      if (!car) {
        car = {
          id: id, lat: c[1], lon: c[2], fromLat: c[1], fromLon: c[2], toLat: c[1], toLon: c[2],
          t0: now, dur: 0, status: c[3], ts: c[4], ride: c[5], updated: now,
          marker: L.circleMarker([c[1], c[2]], {
            renderer: carRenderer, pane: 'cars', radius: 4.5, weight: 1, color: '#ffffff',
            fillColor: COLORS[c[3]] || '#d62728', fillOpacity: 0.95, interactive: false
          }).addTo(map)
        };
        cars.set(id, car);
      } else {
        car.fromLat = car.lat; car.fromLon = car.lon; car.toLat = c[1]; car.toLon = c[2];
        car.dur = Math.min(MAX_INTERP_MS, Math.max(50, now - car.updated));
        car.t0 = now; car.updated = now;
        if (car.status !== c[3] || car.ride !== c[5]) { car.status = c[3]; car.ride = c[5]; styleCar(car); }
        car.ts = c[4];
      }
      var lat = Date.now() - c[4];
      if (lat >= 0 && lat < 600000) {
        state.latencies.push(lat);
        if (state.latencies.length > 4000) state.latencies.splice(0, state.latencies.length - 4000);
      }
    }

    function styleCar(car) {
      var mine = state.ride && state.ride.driver_id === car.id;
      car.marker.setStyle({
        fillColor: COLORS[car.status] || '#d62728', radius: mine ? 9 : 4.5,
        color: mine ? '#000000' : '#ffffff', weight: mine ? 3 : 1
      });
      if (mine) car.marker.bringToFront();
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
      if (moved && carRenderer._map) {
        carRenderer._redrawBounds = null;
        carRenderer._redraw();
      }
      requestAnimationFrame(animate);
    }
    requestAnimationFrame(animate);

    // -- websocket ------------------------------------------------------------------------------
    function wsUrl() {
      var q = new URLSearchParams(location.search).get('ws');
      if (q) return q;
      return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.hostname + ':' + config.wsPort + '/';
    }

    function subscribe() {
      if (!state.ws || state.ws.readyState !== 1) return;
      var b = map.getBounds().pad(0.2);
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return Math.round(v * 1e5) / 1e5; });
      bbox[0] = Math.max(-180, bbox[0]); bbox[1] = Math.max(-90, bbox[1]);
      bbox[2] = Math.min(180, bbox[2]); bbox[3] = Math.min(90, bbox[3]);
      state.lastBBox = bbox;
      state.ws.send(JSON.stringify({ t: 'sub', bbox: bbox }));
    }
    map.on('moveend', subscribe);

    function connect() {
      setMode('connecting');
      var ws = new WebSocket(wsUrl());
      state.ws = ws;
      ws.onopen = function () {
        ws.send(JSON.stringify(state.token ? { t: 'auth', token: state.token } : { t: 'auth' }));
      };
      ws.onmessage = function (ev) {
        var msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (msg.t === 'f') onFrame(msg);
        else if (msg.t === 's') onStats(msg);
        else if (msg.t === 'surge') onSurge(msg);
        else if (msg.t === 'hello') { state.connected = true; state.retry = 0; setMode(state.stats.mode || 'live'); subscribe(); }
        else if (msg.t === 'err') message('server: ' + msg.msg);
      };
      ws.onclose = function (ev) {
        state.connected = false;
        setMode('down');
        if (ev.code === 4401 && state.token) { message('session expired: log in again'); setToken(null); }
        else if (ev.code === 4401 || ev.code === 4403) message('live feed refused: ' + ev.reason);
        state.reconnects++;
        var delay = Math.min(5000, 500 * Math.pow(2, state.retry++));
        setTimeout(connect, delay);
      };
    }

    function onFrame(msg) {
      var now = performance.now();
      state.frames++;
      state.framesAt.push(now);
      for (var i = 0; i < msg.c.length; i++) applyCar(msg.c[i], now);
      for (var j = 0; j < msg.e.length; j++) onRideEvent(msg.e[j]);
    }

    function onStats(msg) {
      state.stats = msg;
      if (state.connected) setMode(msg.mode);
      var lat = state.latencies.slice().sort(function (a, b) { return a - b; });
      state.latencies = [];
      state.p50 = percentile(lat, 0.5); state.p99 = percentile(lat, 0.99);
      $('rh-cars').textContent = msg.cars;
      $('rh-evin').textContent = Math.round(msg.ev_in);
      $('rh-frout').textContent = Math.round(msg.fr_out);
      if (state.p50 !== null) { $('rh-p50').textContent = state.p50 + ' ms'; $('rh-p99').textContent = state.p99 + ' ms'; }
      $('rh-lag').textContent = msg.lag === null || msg.lag === undefined ? 'n/a' : msg.lag;
    }

    function setMode(mode) {
      state.mode = mode;
      var el = $('rh-mode');
      el.textContent = mode === 'down' ? 'reconnecting' : mode;
      el.className = 'rh-mode ' + mode;
    }

    function message(text) { $('rh-msg').textContent = text || ''; }

    // -- login ----------------------------------------------------------------------------------
    function setToken(token) {
      state.token = token;
      state.claims = token ? decodeJwt(token) : null;
      if (token) sessionStorage.setItem('ridehail.token', token); else sessionStorage.removeItem('ridehail.token');
      $('rh-login').hidden = !!token;
      $('rh-who').hidden = !token;
      $('rh-whoami').textContent = state.claims ? (state.claims.role + ' ' + (state.claims.email || state.claims.sub)) : '';
    }

    function relogin() { if (state.ws) state.ws.close(4000, 'credentials changed'); }

    $('rh-login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var body = new URLSearchParams({ username: $('rh-user').value, password: $('rh-pass').value });
      fetch('/auth/token', { method: 'POST', body: body }).then(function (r) {
        return r.json().then(function (j) { if (!r.ok) throw new Error(j.detail || ('HTTP ' + r.status)); return j; });
      }).then(function (j) { setToken(j.access_token); message(''); relogin(); })
        .catch(function (e) { message('login failed: ' + e.message); });
    });
    $('rh-logout').addEventListener('click', function () { setToken(null); clearRide(); relogin(); });

    var code = new URLSearchParams(location.search).get('login');
    if (code) {
      fetch('/auth/exchange', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ code: code }) })
        .then(function (r) { return r.json().then(function (j) { if (!r.ok) throw new Error(j.detail || ('HTTP ' + r.status)); return j; }); })
        .then(function (j) { setToken(j.access_token); relogin(); })
        .catch(function (e) { message('login link failed: ' + e.message); });
      var url = new URL(location.href); url.searchParams.delete('login'); history.replaceState(null, '', url);
    }
    setToken(state.token);

    // -- clicks: inspect a car, or request a ride -------------------------------------------------
    function carAt(latlng) {
      var p = map.latLngToContainerPoint(latlng), best = null, bestD = 10;
      cars.forEach(function (car) {
        var d = p.distanceTo(map.latLngToContainerPoint([car.lat, car.lon]));
        if (d < bestD) { bestD = d; best = car; }
      });
      return best;
    }

    map.on('click', function (ev) {
      var car = carAt(ev.latlng);
      var isRider = state.claims && state.claims.role === 'rider';
      if (car && !(isRider && state.pickup)) {
        L.popup().setLatLng([car.lat, car.lon]).setContent(
          '<b>' + car.id + '</b><br>' + STATUS[car.status] + (car.ride ? '<br>ride ' + car.ride : '')).openOn(map);
        return;
      }
      if (!isRider) { if (!state.token) message('log in as a rider to request a ride'); return; }
      if (state.ride && ['completed', 'cancelled', 'expired'].indexOf(state.ride.status) < 0) {
        message('you already have a ride'); return;
      }
      if (!state.pickup) {
        clearRide();
        state.pickup = ev.latlng;
        addPin(ev.latlng, '#2ca02c', 'pickup');
        message('now click the drop-off');
        return;
      }
      var pickup = state.pickup, dropoff = ev.latlng;
      state.pickup = null;
      addPin(dropoff, '#d62728', 'drop-off');
      requestRide(pickup, dropoff);
    });

    function addPin(latlng, color, label) {
      pinLayer.addLayer(L.circleMarker(latlng, { radius: 8, color: '#000', weight: 2, fillColor: color, fillOpacity: 1 })
        .bindTooltip(label, { permanent: true, direction: 'top', offset: [0, -8] }));
    }

    function clearRide() {
      var old = state.ride;
      state.ride = null; state.pickup = null;
      pinLayer.clearLayers();
      if (old && old.driver_id && cars.has(old.driver_id)) styleCar(cars.get(old.driver_id));
      $('rh-ride').textContent = '';
    }

    function requestRide(pickup, dropoff) {
      var body = { pickup: { lat: pickup.lat, lon: pickup.lng }, dropoff: { lat: dropoff.lat, lon: dropoff.lng } };
      fetch('/api/rides', {
        method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + state.token },
        body: JSON.stringify(body)
      }).then(function (r) {
        return r.json().then(function (j) {
          if (!r.ok) throw new Error(typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail));
          return j;
        });
      }).then(function (j) {
        state.ride = { ride_id: j.ride_id, status: j.status || 'requested', driver_id: null };
        showRide(); message('');
        pollRide(j.ride_id);
      }).catch(function (e) { message('ride request failed: ' + e.message); pinLayer.clearLayers(); });
    }

    function pollRide(rideId) { // a safety net next to the live events (e.g. during a reconnect)
      if (!state.ride || state.ride.ride_id !== rideId) return;
      fetch('/api/rides/' + rideId, { headers: { Authorization: 'Bearer ' + state.token } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          if (j && state.ride && state.ride.ride_id === rideId && j.status && j.status !== state.ride.status &&
              state.ride.status === 'requested') {
            updateRide(j.status, j.driver_id || null);
          }
        }).catch(function () {})
        .then(function () {
          if (state.ride && state.ride.ride_id === rideId && ['completed', 'cancelled', 'expired'].indexOf(state.ride.status) < 0) {
            setTimeout(function () { pollRide(rideId); }, 3000);
          }
        });
    }

    var EVENT_STATUS = {
      'ride.offered': 'offered', 'ride.assigned': 'assigned', 'ride.arrived': 'arrived', 'ride.picked_up': 'in_progress',
      'ride.completed': 'completed', 'ride.cancelled': 'cancelled', 'ride.expired': 'expired'
    };

    function onRideEvent(e) {
      if (!state.ride || e.ride_id !== state.ride.ride_id) return;
      updateRide(EVENT_STATUS[e.type] || e.type, e.driver_id || null, e.eta_s);
    }

    function updateRide(status, driverId, eta) {
      var prev = state.ride.driver_id;
      state.ride.status = status;
      if (driverId) state.ride.driver_id = driverId;
      if (prev && prev !== state.ride.driver_id && cars.has(prev)) styleCar(cars.get(prev));
      if (state.ride.driver_id && cars.has(state.ride.driver_id)) styleCar(cars.get(state.ride.driver_id));
      if (eta) state.ride.eta_s = eta;
      showRide();
      if (['completed', 'cancelled', 'expired'].indexOf(status) >= 0) {
        var id = state.ride.ride_id;
        setTimeout(function () { if (state.ride && state.ride.ride_id === id) clearRide(); }, 8000);
      }
    }

    function showRide() {
      var r = state.ride;
      $('rh-ride').textContent = 'ride ' + r.ride_id.slice(0, 8) + ': ' + r.status +
        (r.driver_id ? ' (car ' + r.driver_id + ')' : '') + (r.status === 'assigned' && r.eta_s ? ', eta ' + Math.round(r.eta_s) + ' s' : '');
    }

    // -- test hooks -----------------------------------------------------------------------------
    window.__ridehail = {
      carCount: function () { return cars.size; },
      positions: function () {
        var out = {};
        cars.forEach(function (c, id) { out[id] = [c.toLat, c.toLon]; });
        return out;
      },
      stats: function () { return Object.assign({ p50: state.p50, p99: state.p99, frames: state.frames, mode: state.mode }, state.stats); },
      ride: function () { return state.ride ? Object.assign({}, state.ride) : null; },
      surge: function () {
        var out = {};
        surgeCells.forEach(function (v, cell) { out[cell] = v.multiplier; });
        return out;
      },
      surgeVisible: function () { return map.hasLayer(surgeLayer); },
      surgeDrawn: function () { // hexagons on the map now, with their fill colours
        var out = {};
        surgeCells.forEach(function (v, cell) { if (v.polygon._map) out[cell] = v.polygon.options.fillColor; });
        return out;
      },
      connected: function () { return state.connected; },
      reconnects: function () { return state.reconnects; },
      dropConnection: function () { if (state.ws) state.ws.close(4000, 'test: drop'); },
      map: map
    };

    connect();
  }

  window.RidehailMap = { start: start };
})();
