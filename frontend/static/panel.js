/* ridehail live map: the panel (stats, login, the rider's ride) and the car popup. Everything shown
 * that comes from the feed or the API is put in the page with textContent or as text nodes, never
 * as HTML. */
(function () {
  'use strict';

  var TERMINAL = ['completed', 'cancelled', 'expired'];
  var EVENT_STATUS = {
    'ride.offered': 'offered', 'ride.assigned': 'assigned', 'ride.arrived': 'arrived',
    'ride.picked_up': 'in_progress',
    'ride.completed': 'completed', 'ride.cancelled': 'cancelled', 'ride.expired': 'expired'
  };

  function $(id) { return document.getElementById(id); }

  function el(tag, text, children) { // a DOM node; text is set as text, never parsed
    var node = document.createElement(tag);
    if (text !== undefined && text !== null) node.textContent = String(text);
    (children || []).forEach(function (c) { node.appendChild(c); });
    return node;
  }

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

  function answer(r) { // JSON body of a fetch, or an Error with the API's reason
    return r.json().then(function (j) {
      if (!r.ok) throw new Error(typeof j.detail === 'string' ? j.detail : JSON.stringify(j.detail || ('HTTP ' + r.status)));
      return j;
    });
  }

  // deps: cars, onCredentials() (after login/logout)
  function create(map, deps) {
    var state = {
      token: sessionStorage.getItem('ridehail.token'), claims: null, ride: null, pickup: null,
      latencies: [], p50: null, p99: null, stats: {}
    };
    state.claims = state.token ? decodeJwt(state.token) : null;
    var pins = L.layerGroup().addTo(map);
    var panel = { state: state };

    function message(text) { $('rh-msg').textContent = text || ''; }

    function setMode(mode) {
      var node = $('rh-mode');
      node.textContent = mode === 'down' ? 'reconnecting' : String(mode);
      node.className = 'rh-mode ' + (['live', 'replay', 'down'].indexOf(mode) >= 0 ? mode : '');
    }

    function latency(ms) {
      if (ms >= 0 && ms < 600000) {
        state.latencies.push(ms);
        if (state.latencies.length > 4000) state.latencies.splice(0, state.latencies.length - 4000);
      }
    }

    function onStats(msg) {
      state.stats = msg;
      var lat = state.latencies.slice().sort(function (a, b) { return a - b; });
      state.latencies = [];
      state.p50 = percentile(lat, 0.5); state.p99 = percentile(lat, 0.99);
      $('rh-cars').textContent = Number(msg.cars) || 0;
      $('rh-evin').textContent = Math.round(Number(msg.ev_in) || 0);
      $('rh-frout').textContent = Math.round(Number(msg.fr_out) || 0);
      if (state.p50 !== null) { $('rh-p50').textContent = state.p50 + ' ms'; $('rh-p99').textContent = state.p99 + ' ms'; }
      $('rh-lag').textContent = msg.lag === null || msg.lag === undefined ? 'n/a' : String(msg.lag);
    }

    // -- login ----------------------------------------------------------------------------------
    function setToken(token) {
      state.token = token;
      state.claims = token ? decodeJwt(token) : null;
      if (token) sessionStorage.setItem('ridehail.token', token); else sessionStorage.removeItem('ridehail.token');
      $('rh-login').hidden = !!token;
      $('rh-who').hidden = !token;
      $('rh-whoami').textContent = state.claims ? (state.claims.role + ' ' + (state.claims.email || state.claims.sub)) : '';
    }

    $('rh-login').addEventListener('submit', function (ev) {
      ev.preventDefault();
      var body = new URLSearchParams({ username: $('rh-user').value, password: $('rh-pass').value });
      fetch('/auth/token', { method: 'POST', body: body }).then(answer)
        .then(function (j) { setToken(j.access_token); message(''); deps.onCredentials(false); })
        .catch(function (e) { message('login failed: ' + e.message); });
    });
    $('rh-logout').addEventListener('click', function () { setToken(null); clearRide(); deps.onCredentials(true); });

    var code = new URLSearchParams(location.search).get('login');
    if (code) {
      fetch('/auth/exchange', { method: 'POST', headers: { 'Content-Type': 'application/json' }, body: JSON.stringify({ code: code }) })
        .then(answer)
        .then(function (j) { setToken(j.access_token); deps.onCredentials(false); })
        .catch(function (e) { message('login link failed: ' + e.message); });
      var url = new URL(location.href); url.searchParams.delete('login'); history.replaceState(null, '', url);
    }
    setToken(state.token);

    // -- clicks: inspect a car, or request a ride -------------------------------------------------
    function carPopup(car) { // text nodes only: the id comes from the feed
      var lines = [el('b', car.id), el('br'), document.createTextNode(deps.cars.statusName(car))];
      if (car.ride) lines.push(el('br'), document.createTextNode('ride ' + car.ride));
      return el('div', null, lines);
    }

    map.on('click', function (ev) {
      var car = deps.cars.at(ev.latlng);
      var isRider = state.claims && state.claims.role === 'rider';
      if (car && !(isRider && state.pickup)) {
        L.popup().setLatLng([car.lat, car.lon]).setContent(carPopup(car)).openOn(map);
        return;
      }
      if (!isRider) { if (!state.token) message('log in as a rider to request a ride'); return; }
      if (state.ride && TERMINAL.indexOf(state.ride.status) < 0) { message('you already have a ride'); return; }
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
      pins.addLayer(L.circleMarker(latlng, { radius: 8, color: '#000', weight: 2, fillColor: color, fillOpacity: 1 })
        .bindTooltip(el('span', label), { permanent: true, direction: 'top', offset: [0, -8] }));
    }

    function clearRide() {
      var old = state.ride;
      state.ride = null; state.pickup = null;
      pins.clearLayers();
      if (old) deps.cars.restyle(old.driver_id);
      $('rh-ride').textContent = '';
    }

    function requestRide(pickup, dropoff) {
      var body = { pickup: { lat: pickup.lat, lon: pickup.lng }, dropoff: { lat: dropoff.lat, lon: dropoff.lng } };
      fetch('/api/rides', {
        method: 'POST', headers: { 'Content-Type': 'application/json', Authorization: 'Bearer ' + state.token },
        body: JSON.stringify(body)
      }).then(answer).then(function (j) {
        state.ride = { ride_id: String(j.ride_id), status: String(j.status || 'requested'), driver_id: null };
        showRide(); message('');
        pollRide(state.ride.ride_id);
      }).catch(function (e) { message('ride request failed: ' + e.message); pins.clearLayers(); });
    }

    function pollRide(rideId) { // a safety net next to the live events (e.g. during a reconnect)
      if (!state.ride || state.ride.ride_id !== rideId) return;
      fetch('/api/rides/' + encodeURIComponent(rideId), { headers: { Authorization: 'Bearer ' + state.token } })
        .then(function (r) { return r.ok ? r.json() : null; })
        .then(function (j) {
          // While it waits (requested, or offered to a car: a declined or timed-out offer sends the
          // rider no event), the REST answer is the truth; later the live events are.
          if (j && state.ride && state.ride.ride_id === rideId && j.status && j.status !== state.ride.status &&
              (state.ride.status === 'requested' || state.ride.status === 'offered')) {
            if (j.status === 'requested') {
              var offeredTo = state.ride.driver_id;
              state.ride.status = 'requested';
              state.ride.driver_id = null;
              if (offeredTo) deps.cars.restyle(offeredTo);
              showRide();
            } else {
              updateRide(String(j.status), j.driver_id ? String(j.driver_id) : null);
            }
          }
        }).catch(function () {})
        .then(function () {
          if (state.ride && state.ride.ride_id === rideId && TERMINAL.indexOf(state.ride.status) < 0) {
            setTimeout(function () { pollRide(rideId); }, 3000);
          }
        });
    }

    function onRideEvent(e) {
      if (!state.ride || !e || e.ride_id !== state.ride.ride_id) return;
      updateRide(EVENT_STATUS[e.type] || String(e.type), e.driver_id ? String(e.driver_id) : null, Number(e.eta_s) || 0);
    }

    function updateRide(status, driverId, eta) {
      var prev = state.ride.driver_id;
      state.ride.status = status;
      if (driverId) state.ride.driver_id = driverId;
      if (prev && prev !== state.ride.driver_id) deps.cars.restyle(prev);
      deps.cars.restyle(state.ride.driver_id);
      if (eta) state.ride.eta_s = eta;
      showRide();
      if (TERMINAL.indexOf(status) >= 0) {
        var id = state.ride.ride_id;
        setTimeout(function () { if (state.ride && state.ride.ride_id === id) clearRide(); }, 8000);
      }
    }

    function showRide() {
      var r = state.ride;
      $('rh-ride').textContent = 'ride ' + r.ride_id.slice(0, 8) + ': ' + r.status +
        (r.driver_id ? ' (car ' + r.driver_id + ')' : '') + (r.status === 'assigned' && r.eta_s ? ', eta ' + Math.round(r.eta_s) + ' s' : '');
    }

    panel.message = message;
    panel.setMode = setMode;
    panel.setToken = setToken;
    panel.latency = latency;
    panel.onStats = onStats;
    panel.onRideEvent = onRideEvent;
    panel.isMine = function (car) { return !!(state.ride && state.ride.driver_id === car.id); };
    return panel;
  }

  window.Ridehail = window.Ridehail || {};
  window.Ridehail.panel = { create: create };
})();
