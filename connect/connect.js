/*! caddy-zapier connect.js: connect an app account through Zapier's Connect UI.
 *
 *   <script src="/zapier/connect/connect.js"></script>
 *
 *   // Popup flow; call it from a click handler so the popup is not blocked.
 *   ZapierConnect.connect({app: "SlackCLIAPI"}).then(
 *     function (connection) { ... },  // the stored connection: {connection_id, app, app_uuid, title, created, last_verified}
 *     function (err) { ... });        // err.reason: popup_blocked, popup_closed, timeout, authentication_error, server_error
 *
 *   // Redirect flow: the browser comes back to returnTo with the outcome in
 *   // the query; ZapierConnect.outcome() reads it there.
 *   ZapierConnect.start({app: "SlackCLIAPI", returnTo: "/settings/integrations"});
 *
 * The gateway's routes are found next to this script, wherever the
 * zapier_connect handler is mounted.
 */
(function () {
  "use strict";

  var script = document.currentScript;
  var base = new URL(".", script && script.src ? script.src : window.location.href).href;
  var POLL_MS = 250;
  var DEFAULT_TTL_S = 360; // a connect token's documented life

  function connectError(reason, message, extra) {
    var err = new Error(message);
    err.name = "ZapierConnectError";
    err.reason = reason;
    for (var k in extra || {}) {
      if (Object.prototype.hasOwnProperty.call(extra, k)) err[k] = extra[k];
    }
    return err;
  }

  // post sends JSON to a gateway route; a failure becomes a server_error
  // carrying the gateway's error code (e.g. connection_invalid).
  function post(route, body) {
    return fetch(base + route, {
      method: "POST",
      credentials: "same-origin",
      headers: {"Content-Type": "application/json", "Accept": "application/json"},
      body: JSON.stringify(body)
    }).then(function (resp) {
      return resp.json().catch(function () { return null; }).then(function (data) {
        if (resp.ok && data) return data;
        var e = (data && data.error) || {};
        throw connectError("server_error", e.message || "the gateway answered HTTP " + resp.status,
          {status: resp.status, code: e.code || ""});
      });
    }, function (e) {
      throw connectError("server_error", "the gateway could not be reached: " + e.message, {status: 0, code: ""});
    });
  }

  function appOf(options, fn) {
    if (!options || typeof options.app !== "string" || options.app === "") {
      throw new TypeError("ZapierConnect." + fn + " needs {app: \"<app id>\"}");
    }
    return options.app;
  }

  function validAuthId(id) {
    return (typeof id === "number" && Number.isSafeInteger(id) && id >= 0) ||
      (typeof id === "string" && id !== "");
  }

  // connect runs the popup flow and resolves with the stored connection.
  function connect(options) {
    var app;
    try {
      app = appOf(options, "connect");
    } catch (e) {
      return Promise.reject(e);
    }
    // Open the popup now, while the click that called connect() still
    // counts as a user gesture; it is sent to Connect once the gateway has
    // minted the connect token.
    var popup = window.open("", "_blank", options.features || "width=980,height=700");
    if (!popup || popup.closed) {
      return Promise.reject(connectError("popup_blocked",
        "the browser blocked the Connect popup; call ZapierConnect.connect from a click handler"));
    }
    var body = {app: app};
    if (options.reconnect === true) body.reconnect = true;
    else if (typeof options.reconnect === "string" && options.reconnect !== "") body.reconnect_id = options.reconnect;

    return new Promise(function (resolve, reject) {
      var settled = false, completing = false;
      var connectOrigin = null, state = null, poll = null, timer = null;

      function stop() {
        window.removeEventListener("message", onMessage);
        clearInterval(poll);
        clearTimeout(timer);
        try {
          if (!popup.closed) popup.close();
        } catch (e) { /* already gone */ }
      }

      function done(ok, value) {
        if (settled) return;
        settled = true;
        stop();
        (ok ? resolve : reject)(value);
      }

      function onMessage(event) {
        // Only Connect, and only our own popup: any other window, including
        // a page on another origin loaded into the popup, is ignored.
        if (event.source !== popup || event.origin !== connectOrigin) return;
        var data = event.data;
        if (settled || completing || !data || typeof data !== "object") return;
        if (data.type === "authenticationSuccess" && validAuthId(data.authId)) {
          completing = true;
          stop();
          post("complete", {app: app, auth_id: String(data.authId), state: state}).then(
            function (connection) { done(true, connection); },
            function (err) { done(false, err); });
        } else if (data.type === "authenticationError") {
          done(false, connectError("authentication_error", "Zapier reported an authentication error",
            {zapierError: data.error}));
        }
      }

      poll = setInterval(function () {
        if (!completing && popup.closed) {
          done(false, connectError("popup_closed", "the Connect popup was closed before the connection was made"));
        }
      }, POLL_MS);

      post("token", body).then(function (data) {
        if (settled) return;
        if (data.connection) { // a stored connection Zapier still reports valid
          done(true, data.connection);
          return;
        }
        var url;
        try {
          url = new URL(data.url);
        } catch (e) {
          done(false, connectError("server_error", "the gateway sent no Connect URL", {status: 200, code: ""}));
          return;
        }
        connectOrigin = url.origin;
        state = data.state;
        window.addEventListener("message", onMessage);
        var ttl = Number(data.expires_in) > 0 ? Number(data.expires_in) : DEFAULT_TTL_S;
        timer = setTimeout(function () {
          done(false, connectError("timeout", "the connect token expired before Connect finished"));
        }, ttl * 1000);
        try {
          popup.location.href = url.href;
        } catch (e) {
          done(false, connectError("popup_closed", "the Connect popup was closed before the connection was made"));
        }
      }, function (err) { done(false, err); });
    });
  }

  // start runs the redirect flow: the browser leaves the page and comes back
  // to returnTo (default: this page) with the outcome in the query.
  function start(options) {
    var q = new URLSearchParams();
    q.set("app", appOf(options, "start"));
    q.set("return_to", options.returnTo || window.location.pathname + window.location.search);
    if (options.reconnect === true) q.set("reconnect", "1");
    else if (typeof options.reconnect === "string" && options.reconnect !== "") q.set("reconnect_id", options.reconnect);
    window.location.assign(base + "start?" + q.toString());
  }

  // outcome reads a finished redirect flow from a URL's query (default: this
  // page's): {status: "success"|"error", app, connectionId, error,
  // errorDescription}, or null when there is none.
  function outcome(search) {
    var q = new URLSearchParams(search === undefined ? window.location.search : search);
    var status = q.get("zapier_connect");
    if (!status) return null;
    return {
      status: status,
      app: q.get("zapier_app"),
      connectionId: q.get("zapier_connection_id"),
      error: q.get("zapier_error"),
      errorDescription: q.get("zapier_error_description")
    };
  }

  window.ZapierConnect = {connect: connect, start: start, outcome: outcome};
})();
