/* ridehail live map: wires the parts together. The page (gateway/map_page.py) loads, in order,
 * cars.js (car drawing), surge.js (surge hexagons), feed.js (the websocket), panel.js (stats,
 * login, the rider's ride, popups) and this file, whose RidehailMap.start(map, config) the page
 * calls. Test hooks: window.__ridehail. Plain ES5-ish browser JavaScript, no build step. */
(function () {
  'use strict';

  var ROAD_STYLE = {
    motorway: ['#e8923a', 3.5], trunk: ['#f0a94f', 3], primary: ['#f7c96b', 2.6],
    secondary: ['#f7d98b', 2.2], tertiary: ['#ffffff', 1.8]
  };

  function baseLayers(map, config, message) {
    map.attributionControl.setPrefix(false);
    map.attributionControl.addAttribution(config.attribution); // the server's own text, not feed data
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
  }

  function start(map, config) {
    var R = window.Ridehail;
    var stats = { frames: 0, mode: 'connecting' };
    var panel = null;
    // the cars' drawer: one canvas (default) or, for comparison, Leaflet markers (?renderer=markers)
    var kind = new URLSearchParams(location.search).get('renderer') === 'markers' ? 'markers' : 'canvas';
    var cars = R.cars.create(map, function (car) { return panel !== null && panel.isMine(car); }, kind);
    var surge = R.surge.create(map);
    var feed = null;
    panel = R.panel.create(map, {
      cars: cars,
      onCredentials: function (loggedOut) { // a login re-authenticates the open socket; a logout reconnects
        if (loggedOut) feed.reconnect('logged out'); else feed.authenticate();
      }
    });
    baseLayers(map, config, panel.message);

    function setMode(mode) { stats.mode = mode; panel.setMode(mode); }

    function subscribe() {
      var b = map.getBounds().pad(0.2);
      var bbox = [b.getWest(), b.getSouth(), b.getEast(), b.getNorth()].map(function (v) { return Math.round(v * 1e5) / 1e5; });
      bbox[0] = Math.max(-180, bbox[0]); bbox[1] = Math.max(-90, bbox[1]);
      bbox[2] = Math.min(180, bbox[2]); bbox[3] = Math.min(90, bbox[3]);
      feed.subscribe(bbox);
      snapshotNext = true;
    }
    map.on('moveend', function () { if (feed.connected) subscribe(); });

    // GPS -> browser latency: a ping's first delivery to this page. Not timed: the first frame after
    // a (re)subscription (every car in the new viewport, some with pings minutes old), a car's first
    // sighting, and an entry re-sent because its car changed state (same ping time as before).
    var newestPing = new Map();  // car id -> time of the newest ping shown
    var snapshotNext = false;
    feed = R.feed.create(config, {
      token: function () { return panel.state.token; },
      onConnecting: function () { setMode('connecting'); },
      onHello: function () { setMode(panel.state.stats.mode || 'live'); subscribe(); },
      onFrame: function (msg) {
        var now = performance.now();
        stats.frames++;
        var carsIn = Array.isArray(msg.c) ? msg.c : [], events = Array.isArray(msg.e) ? msg.e : [];
        var timed = !snapshotNext && carsIn.length > 0;
        if (carsIn.length > 0) snapshotNext = false;
        for (var i = 0; i < carsIn.length; i++) {
          var c = carsIn[i], seen = newestPing.get(c[0]);
          cars.apply(c, now);
          if (seen === undefined || c[4] > seen) {
            newestPing.set(c[0], c[4]);
            if (timed && seen !== undefined) panel.latency(Date.now() - c[4]);
          }
        }
        for (var j = 0; j < events.length; j++) panel.onRideEvent(events[j]);
      },
      onStats: function (msg) { panel.onStats(msg); if (feed.connected) setMode(msg.mode); },
      onSurge: surge.onSurge,
      onError: function (text) { panel.message('server: ' + text); },
      onClose: function (ev) {
        setMode('down');
        if (ev.code === 4401 && panel.state.token) { panel.message('session expired: log in again'); panel.setToken(null); }
        else if (ev.code === 4401 || ev.code === 4403) panel.message('live feed refused: ' + ev.reason);
      }
    });

    window.__ridehail = {
      carCount: cars.count,
      carsDrawn: cars.drawn,
      carsInView: cars.inView,
      draws: cars.draws,
      carTiming: cars.timing,
      renderer: function () { return cars.renderer; },
      positions: cars.positions,
      stats: function () {
        var s = panel.state;
        return Object.assign({ p50: s.p50, p99: s.p99, frames: stats.frames, mode: stats.mode }, s.stats);
      },
      ride: function () { return panel.state.ride ? Object.assign({}, panel.state.ride) : null; },
      surge: surge.snapshot,
      surgeVisible: surge.visible,
      surgeDrawn: surge.drawn,
      connected: function () { return feed.connected; },
      reconnects: function () { return feed.reconnects; },
      dropConnection: function () { feed.reconnect('test: drop'); },
      map: map
    };

    feed.connect();
  }

  window.RidehailMap = { start: start };
})();
