/* ridehail live map: the websocket feed (frame format: docs/gateway.md). It connects only to the
 * gateway that served the page (this host, the configured port): no URL from the query string
 * ever receives the user's token. A new login re-authenticates the open socket. */
(function () {
  'use strict';

  function wsUrl(config) {
    return (location.protocol === 'https:' ? 'wss://' : 'ws://') + location.hostname + ':' + Number(config.wsPort) + '/';
  }

  // handlers: token() -> current token or null; onHello(msg), onFrame(msg), onStats(msg),
  // onSurge(msg), onError(text), onClose(event), onConnecting()
  function create(config, handlers) {
    var feed = { ws: null, connected: false, retry: 0, reconnects: 0 };

    function send(msg) {
      if (feed.ws && feed.ws.readyState === 1) feed.ws.send(JSON.stringify(msg));
    }

    function authMessage() {
      var token = handlers.token();
      return token ? { t: 'auth', token: token } : { t: 'auth' };
    }

    function connect() {
      handlers.onConnecting();
      var ws = new WebSocket(wsUrl(config));
      feed.ws = ws;
      ws.onopen = function () { ws.send(JSON.stringify(authMessage())); };
      ws.onmessage = function (ev) {
        var msg;
        try { msg = JSON.parse(ev.data); } catch (e) { return; }
        if (!msg || typeof msg !== 'object') return;
        if (msg.t === 'f') handlers.onFrame(msg);
        else if (msg.t === 's') handlers.onStats(msg);
        else if (msg.t === 'surge') handlers.onSurge(msg);
        else if (msg.t === 'hello') { feed.connected = true; feed.retry = 0; handlers.onHello(msg); }
        else if (msg.t === 'err') handlers.onError(String(msg.msg));
      };
      ws.onclose = function (ev) {
        feed.connected = false;
        handlers.onClose(ev);
        feed.reconnects++;
        var delay = Math.min(5000, 500 * Math.pow(2, feed.retry++));
        setTimeout(connect, delay);
      };
    }

    feed.connect = connect;
    feed.subscribe = function (bbox) { send({ t: 'sub', bbox: bbox }); };
    // a new token (login) on the open socket; no socket yet: the next connect sends it
    feed.authenticate = function () { if (feed.connected) send(authMessage()); };
    feed.reconnect = function (why) { if (feed.ws) feed.ws.close(4000, why); };
    return feed;
  }

  window.Ridehail = window.Ridehail || {};
  window.Ridehail.feed = { create: create };
})();
