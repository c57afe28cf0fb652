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
//   /zapier/mcp/authorize?app=&return_to= authorize an app for AI agents
//   GET    /zapier/mcp/apps               the user's authorized apps
//   DELETE /zapier/mcp/apps/{app}         forget one
//   PUT    /zapier/triggers/subscriptions/{name}, GET …/subscriptions,
//   DELETE /zapier/triggers/subscriptions/{name}
//
// and the partner backend's own routes: /partner/session, its AI agent
// (/partner/mcp/tools, /partner/mcp/call: MCP to the gateway), the
// deliveries its event receiver got (/partner/deliveries) and, against the
// fake Zapier, /partner/demo/trigger-event. No framework, no build step;
// data reaches the DOM only as text.
(function () {
  "use strict";

  var $ = function (id) { return document.getElementById(id); };
  var catalog = [];     // the apps this partner offers (apps.json)
  var connections = []; // the user's connections, as the gateway lists them
  var chosen = null;    // {app, action} whose form is shown
  var features = {};    // what the partner backend offers: agents, events, fake_trigger

  // api calls a route on this origin and resolves with {status, data}. An
  // error answer rejects with an Error whose message is for the person
  // (userMessage) and whose code and detail are the gateway's (or the
  // partner's) error body, which the call log shows for developers.
  function api(method, path, body, quiet) {
    var init = {method: method, credentials: "same-origin", headers: {"Accept": "application/json"}};
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    return fetch(path, init).then(function (resp) {
      return resp.text().then(function (text) {
        var data = null;
        try { data = text ? JSON.parse(text) : null; } catch (e) { /* not JSON */ }
        if (!resp.ok) {
          var err = (data && data.error) || {};
          var code = err.code || "http_" + resp.status;
          var detail = err.message || text;
          if (!quiet) logCall(method, path, resp.status, code + ": " + detail);
          var e = new Error(userMessage(code));
          e.code = code;
          e.detail = detail;
          throw e;
        }
        if (!quiet) logCall(method, path, resp.status);
        return {status: resp.status, data: data};
      });
    });
  }

  function logCall(method, path, status, detail) {
    var li = document.createElement("li");
    li.textContent = method + " " + path + " → " + status + (detail ? " (" + detail + ")" : "");
    $("call-log").appendChild(li);
  }

  // userMessage says what an error code means to the person using the
  // page; what a developer needs (the gateway's message) stays in the
  // error body and the call log.
  var userMessages = {
    connection_missing: "Connect an account for this app first.",
    connection_invalid: "That account is no longer connected: connect it again.",
    connection_ambiguous: "You have several accounts for this app: pick one.",
    connect_state_invalid: "The connection took too long or was opened elsewhere: try again.",
    app_not_found: "This app is not available.",
    action_not_found: "This action is not available for the app.",
    action_rejected: "The app refused this action: check the fields and try again.",
    run_not_found: "That run is no longer available.",
    mcp_app_unknown: "This app is not available for AI agents.",
    mcp_authorization_missing: "This app is not authorized for AI agents.",
    mcp_tool_denied: "Your organization does not allow this tool.",
    mcp_tool_call_limit: "Too many tool calls: try again in a minute.",
    mcp_upstream_failed: "The app's AI tools are not answering: try again later.",
    mcp_failed: "The AI agent could not reach its tools: try again later.",
    subscription_conflict: "A subscription with that name exists already: choose another name.",
    subscription_not_found: "That subscription no longer exists.",
    zapier_api_failed: "Zapier is not answering right now: try again in a moment.",
    zapier_api_timeout: "Zapier is not answering right now: try again in a moment.",
    login_required: "Your session has ended: log in again.",
    identity_missing: "Your session has ended: log in again.",
    mcp_authorization_required: "Authorize this app for AI agents first.",
    rate_limited: "Too many requests right now: try again in a moment.",
    zapier_unavailable: "Zapier is not answering right now: try again in a moment.",
    zapier_budget_exhausted: "Zapier is busy right now: try again in a moment.",
    access_denied: "Access was not granted.",
    bad_request: "That did not work: check the fields and try again."
  };
  function userMessage(code) {
    return userMessages[code] || "Something went wrong. Try again; the details are under “Calls this page made”.";
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
      features = res.data;
      return fetch("/apps.json").then(function (r) { return r.json(); }).then(function (c) {
        catalog = c.apps;
        showRedirectOutcome();
        if (features.agents) startAgents();
        if (features.events) startEvents();
        if (features.show_usage) loadUsage();
        return loadConnections();
      });
    }, function () {
      $("login").hidden = false;
    }).catch(function (e) { notify(e.message, true); });
  }

  // A redirect flow comes back here with its outcome in the query.
  function showRedirectOutcome() {
    var q = new URLSearchParams(window.location.search);
    if (q.get("zapier_mcp")) { // the MCP authorize flow, back from Zapier
      if (q.get("zapier_mcp") === "success") notify("Authorized " + appName(q.get("zapier_app")) + " for AI agents.");
      else {
        logOutcome("MCP authorize", q.get("zapier_error"), q.get("zapier_error_description"));
        notify("Not authorized for AI agents. " + userMessage(q.get("zapier_error")), true);
      }
      history.replaceState(null, "", window.location.pathname);
      return;
    }
    var outcome = ZapierConnect.outcome();
    if (!outcome) return;
    if (outcome.status === "success") {
      notify("Connected " + appName(outcome.app) + " by redirect (connection " + outcome.connectionId + ").");
    } else {
      logOutcome("Connect", outcome.error, outcome.errorDescription);
      notify("Not connected. " + userMessage(outcome.error), true);
    }
    history.replaceState(null, "", window.location.pathname);
  }

  // logOutcome puts a redirect flow's error, as the gateway reported it, in
  // the call log.
  function logOutcome(flow, code, description) {
    var li = document.createElement("li");
    li.textContent = flow + " came back with " + code + (description ? ": " + description : "");
    $("call-log").appendChild(li);
  }

  // --- Apps and connections -------------------------------------------------

  function appName(id) {
    var a = findApp(id);
    return a ? a.name : id;
  }

  function findApp(id) {
    id = String(id || "").toLowerCase();
    return catalog.find(function (a) {
      return a.app.toLowerCase() === id || String(a.mcp_app || "").toLowerCase() === id;
    });
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
      // AI agents: another plain link, to the MCP authorize flow. MCP names
      // an app by its implementation id (GET /v2/whitelabel/apps).
      var agents = features.agents && app.mcp_app ? el("a", {className: "button mcp-authorize", text: "Authorize for AI agents",
        href: "/zapier/mcp/authorize?" + new URLSearchParams({app: app.mcp_app, return_to: "/"})}) : null;
      list.appendChild(el("li", {className: "app", "data-app": app.app}, [
        el("h3", {text: app.name}),
        el("ul", {className: "connections"}, items),
        el("div", {className: "buttons"}, [popup, redirect, actions, agents])
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
      logOutcome("Connect (popup)", err.reason, err.message);
      notify("Not connected. " + userMessage(err.reason), true);
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
      showResult({status: "failed", error: e.message, code: e.code});
    });
  }

  // follow polls a run that outlasted "wait" (202) until it finishes.
  function follow(res) {
    showResult(res.data.run);
    if (res.status !== 202) return;
    setTimeout(function () {
      api("GET", "/zapier/actions/runs/" + encodeURIComponent(res.data.run.id)).then(follow).catch(function (e) {
        showResult({status: "failed", error: e.message, code: e.code});
      });
    }, 1000);
  }

  function showResult(run) {
    if (features.show_usage && (run.status === "success" || run.status === "error")) loadUsage();
    $("result").hidden = false;
    $("run-status").textContent = run.status;
    $("run-output").textContent = JSON.stringify(run, null, 2);
  }

  // --- Usage ------------------------------------------------------------------

  // loadUsage shows the tenant's Zapier tasks this month and its quota, as
  // the partner backend reads them from the gateway's admin API.
  function loadUsage() {
    api("GET", "/partner/usage", undefined, true).then(function (res) {
      $("usage-tasks").textContent = String(res.data.tasks);
      $("usage-quota").textContent = res.data.quota === "off" ? "none" : res.data.quota.replace("/", " per ");
      $("usage").hidden = false;
    }).catch(function () { $("usage").hidden = true; });
  }

  // --- AI agents -------------------------------------------------------------

  function startAgents() {
    $("agents").hidden = false;
    $("mcp-refresh").addEventListener("click", loadTools);
    $("mcp-call-form").addEventListener("submit", callTool);
    loadAgents();
  }

  function loadAgents() {
    return api("GET", "/zapier/mcp/apps").then(function (res) {
      var list = $("mcp-apps");
      list.textContent = "";
      var apps = (res.data && res.data.data) || [];
      if (apps.length === 0) list.appendChild(el("li", {className: "empty", text: "None yet"}));
      apps.forEach(function (a) {
        var forget = el("button", {className: "mcp-forget", type: "button", text: "Forget"});
        forget.addEventListener("click", function () {
          api("DELETE", "/zapier/mcp/apps/" + encodeURIComponent(a.app)).then(function () {
            notify("AI agents no longer use " + (a.title || appName(a.app)) + ".");
            clearToolCall();
            return loadAgents();
          }).catch(function (e) { notify(e.message, true); });
        });
        list.appendChild(el("li", {className: "mcp-app", "data-app": a.app}, [
          el("strong", {text: a.title || appName(a.app)}),
          el("span", {className: "meta", text: "authorized " + new Date(a.authorized_at).toLocaleString()}), forget
        ]));
      });
      // Nothing authorized, no tools: the agent is not asked. (The
      // gateway keeps a user's tool list at least a second, so asking now
      // could show an empty list just after the first authorization.)
      if (apps.length === 0) {
        $("mcp-tools").textContent = "";
        $("mcp-tools").appendChild(el("li", {className: "empty", text: "No tools: authorize an app first"}));
        return;
      }
      return loadTools();
    }).catch(function (e) { notify(e.message, true); });
  }

  // loadTools asks the partner's agent which tools it sees: the gateway's
  // aggregate MCP endpoint, named <app>__<tool>.
  function loadTools() {
    return api("GET", "/partner/mcp/tools").then(function (res) {
      var list = $("mcp-tools");
      list.textContent = "";
      if (res.data.tools.length === 0) list.appendChild(el("li", {className: "empty", text: "No tools: authorize an app first"}));
      res.data.tools.forEach(function (t) {
        var use = el("button", {className: "use-tool", type: "button", text: "Call…", "data-tool": t.name});
        use.addEventListener("click", function () { showToolForm(t); });
        list.appendChild(el("li", {className: "tool", "data-tool": t.name}, [
          use, el("code", {text: t.name}), el("span", {text: t.description || ""})
        ]));
      });
    }).catch(function (e) { notify(e.message, true); });
  }

  // clearToolCall hides the call form and the last result, which belong
  // to tools the agent may no longer see.
  function clearToolCall() {
    $("mcp-call-form").hidden = true;
    $("mcp-tool").value = "";
    $("mcp-fields").textContent = "";
    $("mcp-result").textContent = "";
    $("mcp-result").hidden = true;
  }

  // showToolForm builds the call form from the tool's input schema (a JSON
  // Schema object): a field per property, typed, required ones marked.
  // Properties of other types (objects, arrays) take JSON.
  function showToolForm(tool) {
    clearToolCall();
    $("mcp-tool").value = tool.name;
    var schema = tool.input_schema || {};
    var props = schema.properties || {};
    var required = schema.required || [];
    Object.keys(props).forEach(function (name) {
      var p = props[name] || {};
      var type = Array.isArray(p.type) ? p.type.filter(function (x) { return x !== "null"; })[0] : p.type;
      var input;
      if (type === "boolean") {
        input = el("input", {type: "checkbox"});
      } else if (type === "integer" || type === "number") {
        input = el("input", {type: "number", step: type === "integer" ? "1" : "any"});
      } else {
        input = el("input", {type: "text", placeholder: type === "string" || !type ? "" : "JSON"});
      }
      input.name = name;
      input.dataset.type = type || "string";
      if (required.indexOf(name) >= 0) input.required = true;
      $("mcp-fields").appendChild(el("label", {title: p.description || ""},
        [document.createTextNode((p.title || name) + (input.required ? " *" : "")), input]));
    });
    if (Object.keys(props).length === 0) {
      $("mcp-fields").appendChild(el("span", {className: "meta", text: "This tool takes no arguments."}));
    }
    $("mcp-call-form").hidden = false;
  }

  // toolArguments reads the form back into the tool's arguments, typed as
  // the schema says; an empty optional field is left out.
  function toolArguments() {
    var args = {};
    Array.prototype.forEach.call($("mcp-fields").querySelectorAll("input"), function (i) {
      var type = i.dataset.type;
      if (type === "boolean") { args[i.name] = i.checked; return; }
      if (i.value === "") return;
      if (type === "integer" || type === "number") args[i.name] = Number(i.value);
      else if (type === "string") args[i.name] = i.value;
      else args[i.name] = JSON.parse(i.value);
    });
    return args;
  }

  function callTool(event) {
    event.preventDefault();
    var args;
    try { args = toolArguments(); } catch (e) { notify("A field that takes JSON does not hold valid JSON.", true); return; }
    var out = $("mcp-result");
    api("POST", "/partner/mcp/call", {name: $("mcp-tool").value, arguments: args}).then(function (res) {
      out.className = res.data.is_error ? "error" : "";
      out.textContent = res.data.text;
      out.hidden = false;
    }).catch(function (e) { notify(e.message, true); });
  }

  // --- Trigger events ----------------------------------------------------------

  var shownDeliveries = null; // the ids of the deliveries shown

  function startEvents() {
    $("events").hidden = false;
    catalog.forEach(function (a) { $("sub-app").appendChild(el("option", {value: a.app, text: a.name})); });
    $("sub-form").addEventListener("submit", subscribe);
    if (features.fake_trigger) {
      $("fire-trigger").hidden = false;
      $("fire-trigger").addEventListener("click", fireTrigger);
    }
    loadSubscriptions();
    loadDeliveries();
    // The receiver is the partner backend; the page asks it for news.
    setInterval(loadDeliveries, 2000);
  }

  function subscribe(event) {
    event.preventDefault();
    var name = $("sub-name").value;
    api("PUT", "/zapier/triggers/subscriptions/" + encodeURIComponent(name), {app: $("sub-app").value, trigger: $("sub-trigger").value}).then(function (res) {
      notify((res.status === 201 ? "Subscribed: " : "Already subscribed: ") + name + ".");
      return loadSubscriptions();
    }).catch(function (e) { notify(e.message, true); });
  }

  function loadSubscriptions() {
    return api("GET", "/zapier/triggers/subscriptions").then(function (res) {
      var list = $("subscriptions");
      list.textContent = "";
      var subs = (res.data && res.data.data) || [];
      if (subs.length === 0) list.appendChild(el("li", {className: "empty", text: "None yet"}));
      subs.forEach(function (s) {
        var del = el("button", {className: "unsubscribe", type: "button", text: "Delete"});
        del.addEventListener("click", function () {
          api("DELETE", "/zapier/triggers/subscriptions/" + encodeURIComponent(s.name)).then(loadSubscriptions)
            .catch(function (e) { notify(e.message, true); });
        });
        var counts = s.counts || {};
        list.appendChild(el("li", {className: "subscription", "data-name": s.name}, [
          el("strong", {text: s.name}), el("span", {text: appName(s.app) + " · " + s.trigger}),
          el("span", {className: "status" + (s.status === "active" ? "" : " bad"), text: s.status}),
          el("span", {className: "meta", text: (counts.delivered || 0) + " delivered"}), del
        ]));
      });
    });
  }

  function fireTrigger() {
    api("POST", "/partner/demo/trigger-event").then(function (res) {
      var n = res.data.fired.length;
      notify(n ? "The fake Zapier fired " + n + " event(s); the gateway delivers them." : "No active subscription to fire.", n === 0);
    }).catch(function (e) { notify(e.message, true); });
  }

  function loadDeliveries() {
    api("GET", "/partner/deliveries", undefined, true).then(function (res) {
      var ds = res.data.data;
      var key = ds.map(function (d) { return d.id; }).join(" ");
      if (key === shownDeliveries) return;
      if (shownDeliveries !== null) loadSubscriptions(); // their counts moved
      shownDeliveries = key;
      var list = $("deliveries");
      list.textContent = "";
      if (ds.length === 0) list.appendChild(el("li", {className: "empty", text: "None yet"}));
      ds.forEach(function (d) {
        var payload = d.body.payload !== undefined ? d.body.payload : d.body;
        list.appendChild(el("li", {className: "delivery", "data-id": d.id, "data-type": d.type}, [
          el("strong", {text: d.type}),
          el("span", {text: [d.subscription, appName(d.app), d.trigger].filter(Boolean).join(" · ")}),
          el("span", {className: "meta", text: "received " + new Date(d.received_at).toLocaleTimeString() + " · " + d.id}),
          el("pre", {text: JSON.stringify(payload, null, 2)})
        ]));
      });
    }).catch(function () { /* logged out or the backend restarted: try again */ });
  }

  $("run-form").addEventListener("submit", run);
  start();
})();
