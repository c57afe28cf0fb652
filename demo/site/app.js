// The demo partner page. Everything it does goes through the gateway's own
// browser routes on this origin (the ingress adds the user's identity):
//
//   /zapier/connect/connect.js            the popup and redirect flows
//   GET    /zapier/connect/connections    the user's connections
//   DELETE /zapier/connect/connections/{app}
//   GET    /zapier/actions/actions?app=   an app's actions
//   POST   /zapier/actions/inputs         an action's input fields
//   POST   /zapier/actions/run            run it and wait for the result
//   GET    /zapier/actions/runs/{id}      a run that outlasted "wait"
//
// and the partner's own /partner/session. No framework, no build step; data
// reaches the DOM only as text.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var catalog = [];     // the apps this partner offers (apps.json)
  var connections = []; // the user's connections, as the gateway lists them
  var chosen = null;    // {app, action} whose form is shown

  // api calls a route on this origin and resolves with {status, data};
  // an error answer rejects with the gateway's (or the partner's) message.
  function api(method, path, body) {
    var init = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (resp) {
      logCall(method, path, resp.status);
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
        if (!resp.ok) {
          var err = (data && data.error) || {};
          throw new Error((err.code || "HTTP " + resp.status) + ": " + (err.message || text));
        }
        return {status: resp.status, data: data};
      });
    });
  }

  function logCall(method, path, status) {
    var li = document.createElement("li");
    li.textContent = method + " " + path + " → " + status;
    $("call-log").appendChild(li);
  }

  function el(tag, props, children) {
    var node = document.createElement(tag);
    Object.keys(props || {}).forEach(function (k) {
      if (k === "text") node.textContent = props[k];
      else if (k === "className") node.className = props[k];
      else node.setAttribute(k, props[k]);
    });
    (children || []).forEach(function (c) { if (c) node.appendChild(c); });
    return node;
  }

  function notify(message, isError) {
    var n = $("notice");
    n.textContent = message;
    n.className = isError ? "error" : "";
    n.hidden = false;
  }

  // --- Log in --------------------------------------------------------------

  function start() {
    api("GET", "/partner/session").then(function (res) {
      $("who-user").textContent = res.data.user;
      $("who-tenant").textContent = res.data.tenant;
      $("who").hidden = false;
      $("integrations").hidden = false;
      return fetch("/apps.json").then(function (r) { return r.json(); }).then(function (c) {
        catalog = c.apps;
        showRedirectOutcome();
        return loadConnections();
      });
    }, function () {
      $("login").hidden = false;
    }).catch(function (e) { notify(e.message, true); });
  }

  // A redirect flow comes back here with its outcome in the query.
  function showRedirectOutcome() {
    var outcome = ZapierConnect.outcome();
    if (!outcome) return;
    if (outcome.status === "success") {
      notify("Connected " + appName(outcome.app) + " by redirect (connection " + outcome.connectionId + ").");
    } else {
      notify("Not connected: " + outcome.error + " " + (outcome.errorDescription || ""), true);
    }
    history.replaceState(null, "", window.location.pathname);
  }

  // --- Apps and connections -------------------------------------------------

  function appName(id) {
    var a = findApp(id);
    return a ? a.name : id;
  }

  function findApp(id) {
    id = String(id || "").toLowerCase();
    return catalog.find(function (a) { return a.app.toLowerCase() === id; });
  }

  function connectionsOf(app) {
    return connections.filter(function (c) {
      return findApp(c.app_uuid) === app || findApp(c.app) === app;
    });
  }

  function loadConnections() {
    return api("GET", "/zapier/connect/connections").then(function (res) {
      connections = (res.data && res.data.data) || [];
      renderApps();
    });
  }

  function renderApps() {
    var list = $("apps");
    list.textContent = "";
    catalog.forEach(function (app) {
      var conns = connectionsOf(app);
      var items = conns.map(function (c) { return renderConnection(app, c); });
      if (items.length === 0) items = [el("li", {className: "empty", text: "Not connected"})];
      var popup = el("button", {className: "connect-popup", text: "Connect (popup)"});
      popup.addEventListener("click", function () { connectByPopup(app); });
      // The redirect flow is a plain link: the browser leaves this page,
      // goes through Zapier's Connect UI and comes back to return_to.
      var redirect = el("a", {className: "button connect-redirect", text: "Connect (redirect)",
        href: "/zapier/connect/start?" + new URLSearchParams({app: app.app, return_to: "/"})});
      var actions = el("button", {className: "show-actions", text: "Actions"});
      actions.addEventListener("click", function () { showActions(app); });
      list.appendChild(el("li", {className: "app", "data-app": app.app}, [
        el("h3", {text: app.name}),
        el("ul", {className: "connections"}, items),
        el("div", {className: "buttons"}, [popup, redirect, actions])
      ]));
    });
  }

  // renderConnection shows whatever the gateway lists: title, status and
  // ids when present.
  function renderConnection(app, c) {
    var id = c.id || c.connection_id;
    var meta = ["connection " + id];
    if (c.created) meta.push("created " + new Date(c.created).toLocaleString());
    var bad = /expired|invalid|error|revoked|disconnected/i.test(c.status || "");
    var status = c.status ? el("span", {className: "status" + (bad ? " bad" : ""), text: c.status}) : null;
    var disconnect = el("button", {className: "disconnect", text: "Disconnect"});
    disconnect.addEventListener("click", function () { disconnectOne(app, c); });
    return el("li", {className: "connection", "data-connection": id}, [
      el("div", {}, [
        el("span", {className: "title", text: c.title || app.name}), document.createTextNode(" "), status,
        el("div", {className: "meta", text: meta.join(" · ")})
      ]),
      disconnect
    ]);
  }

  function connectByPopup(app) {
    // Called straight from the click, so the browser allows the popup.
    ZapierConnect.connect({app: app.app}).then(function (c) {
      notify("Connected " + app.name + " in a popup (" + (c.title || "connection " + c.connection_id) + ").");
      return loadConnections();
    }, function (err) {
      notify("Not connected: " + err.reason + ": " + err.message, true);
    });
  }

  function disconnectOne(app, c) {
    var path = "/zapier/connect/connections/" + encodeURIComponent(app.app);
    if (c.id) path += "?" + new URLSearchParams({connection_id: c.id});
    api("DELETE", path).then(function () {
      notify("Disconnected " + (c.title || app.name) + ".");
      return loadConnections();
    }).catch(function (e) { notify(e.message, true); });
  }

  // --- Actions ---------------------------------------------------------------

  function showActions(app) {
    $("actions").hidden = false;
    $("actions-title").textContent = app.name + " actions";
    $("run-form").hidden = true;
    $("result").hidden = true;
    var list = $("action-list");
    list.textContent = "";
    api("GET", "/zapier/actions/actions?" + new URLSearchParams({app: app.app})).then(function (res) {
      res.data.data.forEach(function (a) {
        var use = el("button", {className: "use-action", text: "Use", "data-action": a.key});
        use.addEventListener("click", function () { showForm(app, a); });
        list.appendChild(el("li", {}, [
          use, el("strong", {text: a.title}), el("span", {className: "type", text: a.action_type}),
          el("span", {text: a.description || ""})
        ]));
      });
    }).catch(function (e) { notify(e.message, true); });
  }

  // showForm renders the action's input fields (POST inputs) as a form.
  function showForm(app, action) {
    chosen = {app: app, action: action};
    $("result").hidden = true;
    $("run-title").textContent = action.title;
    var fields = $("fields");
    fields.textContent = "";
    // With several accounts for the app the user picks one; a connection
    // that has an id is named in the run, otherwise the gateway uses the
    // stored one.
    var accounts = connectionsOf(app).filter(function (c) { return c.id; });
    if (accounts.length > 0) {
      fields.appendChild(el("label", {text: "Account"}, [el("select", {id: "run-connection"},
        accounts.map(function (c) { return el("option", {value: c.id, text: c.title || c.id}); }))]));
    }
    api("POST", "/zapier/actions/inputs", {app: app.app, action: action.key, action_type: action.action_type}).then(function (res) {
      (res.data.data || []).forEach(function (f) {
        if (f.type && f.type !== "input_field") return;
        var input = el("input", {name: f.id, placeholder: f.placeholder || "", value: f.default_value || ""});
        if (f.is_required) input.required = true;
        fields.appendChild(el("label", {text: (f.title || f.id) + (f.is_required ? " *" : "")}, [input]));
      });
      $("run-form").hidden = false;
    }).catch(function (e) { notify(e.message, true); });
  }

  function run(event) {
    event.preventDefault();
    var inputs = {};
    Array.prototype.forEach.call($("fields").querySelectorAll("input"), function (i) { inputs[i.name] = i.value; });
    var body = {app: chosen.app.app, action: chosen.action.key, action_type: chosen.action.action_type, inputs: inputs, wait: "30s"};
    if ($("run-connection")) body.connection_id = $("run-connection").value;
    showResult({status: "running"});
    api("POST", "/zapier/actions/run", body).then(follow).catch(function (e) {
      showResult({status: "failed", error: e.message});
    });
  }

  // follow polls a run that outlasted "wait" (202) until it finishes.
  function follow(res) {
    showResult(res.data.run);
    if (res.status !== 202) return;
    setTimeout(function () {
      api("GET", "/zapier/actions/runs/" + encodeURIComponent(res.data.run.id)).then(follow).catch(function (e) {
        showResult({status: "failed", error: e.message});
      });
    }, 1000);
  }

  function showResult(run) {
    $("result").hidden = false;
    $("run-status").textContent = run.status;
    $("run-output").textContent = JSON.stringify(run, null, 2);
  }

  $("run-form").addEventListener("submit", run);
  start();
})();
