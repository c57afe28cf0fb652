package fakezapier

// connect.zapier.com/to/{app} (zapier-api.md §3): the Connect UI. It spends
// a single-use connect token minted for exactly this URL, then either
// redirects back to redirect_uri (redirect pattern) or serves a page that
// posts the outcome to window.opener with an exact target origin (popup
// pattern). There is no real third-party app: what "the user" does is
// decided by the queued ConnectOutcomes (approve by default).

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"html/template"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
)

// ConnectOutcomeKind is what the user does in the Connect UI.
type ConnectOutcomeKind int

const (
	// ConnectApprove creates the connection (or re-authorizes reconnect_id)
	// and reports authenticationSuccess / authentication_id. The default.
	ConnectApprove ConnectOutcomeKind = iota
	// ConnectDeny reports authenticationError / error=… (e.g. the user
	// cancelled the app's OAuth step).
	ConnectDeny
	// ConnectHold leaves the page open with nothing reported, like a user
	// who never finishes.
	ConnectHold
	// ConnectThirdParty sends the popup to URL, as happens during an app's
	// OAuth step (a page on the app's own origin).
	ConnectThirdParty
)

// ConnectOutcome is the outcome of one Connect UI session.
type ConnectOutcome struct {
	Kind ConnectOutcomeKind
	// Title of a connection created by ConnectApprove; default
	// AccountTitle(tenant, user), e.g. "alice@org-1.example".
	Title string
	// Error and Description for ConnectDeny; defaults access_denied and
	// "OAuth Failed: the user denied access".
	Error, Description string
	// URL for ConnectThirdParty.
	URL string
}

// connectUI is the Connect UI's configuration and queue.
type connectUI struct {
	mu             sync.Mutex
	partnerOrigins []string
	redirectURIs   []string
	apps           map[string]string // implementation id → app UUID
	titles         map[string]string // implementation id → title in GET /v2/apps
	appListings    int
	outcomes       []ConnectOutcome
	sessions       int
}

// RegisterPartner records what a partner registers at onboarding: the
// origin its pages run on (the exact postMessage target of the popup
// pattern) and, optionally, the redirect URIs the redirect pattern may use.
// With no redirect URI registered, any absolute http(s) redirect_uri is
// accepted.
func (s *Server) RegisterPartner(origin string, redirectURIs ...string) {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	s.ui.partnerOrigins = append(s.ui.partnerOrigins, strings.TrimSuffix(origin, "/"))
	s.ui.redirectURIs = append(s.ui.redirectURIs, redirectURIs...)
}

// RegisterApp maps a Connect implementation id (the {app} of /to/{app}) to
// the app UUID its connections carry in /v2/authentications. An unmapped
// {app} is used as the app id as it is.
func (s *Server) RegisterApp(implementationID, uuid string) {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	if s.ui.apps == nil {
		s.ui.apps = map[string]string{}
	}
	s.ui.apps[implementationID] = uuid
}

// QueueConnectOutcomes sets what happens in the next Connect UI sessions, in
// order; once the queue is empty, sessions approve.
func (s *Server) QueueConnectOutcomes(o ...ConnectOutcome) {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	s.ui.outcomes = append(s.ui.outcomes, o...)
}

// ConnectSessions returns how many Connect UI sessions started (a connect
// token was accepted).
func (s *Server) ConnectSessions() int {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	return s.ui.sessions
}

// Connections lists an identity's connections for an app UUID, as
// /v2/authentications would.
func (s *Server) Connections(tenant, user, app string) []Authentication {
	return s.connectionsFor(tenant, user, app)
}

func (s *Server) nextOutcome() ConnectOutcome {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	s.ui.sessions++
	if len(s.ui.outcomes) == 0 {
		return ConnectOutcome{Kind: ConnectApprove}
	}
	o := s.ui.outcomes[0]
	s.ui.outcomes = s.ui.outcomes[1:]
	return o
}

func (s *Server) appUUID(app string) string {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	if uuid, ok := s.ui.apps[app]; ok {
		return uuid
	}
	return app
}

// targetOrigin is the partner origin the popup posts to: the registered
// one, or (for demos with nothing registered) the origin of the opener
// page, as its Referer tells.
func (s *Server) targetOrigin(r *http.Request) (string, bool) {
	s.ui.mu.Lock()
	origins := slices.Clone(s.ui.partnerOrigins)
	s.ui.mu.Unlock()
	ref, err := url.Parse(r.Referer())
	refOrigin := ""
	if err == nil && ref.Scheme != "" && ref.Host != "" {
		refOrigin = ref.Scheme + "://" + ref.Host
	}
	switch {
	case len(origins) == 1:
		return origins[0], true
	case slices.Contains(origins, refOrigin):
		return refOrigin, true
	case len(origins) == 0 && refOrigin != "":
		return refOrigin, true
	}
	return "", false
}

// checkRedirectURI accepts an absolute http(s) URL without a fragment that
// is registered (when any are).
func (s *Server) checkRedirectURI(raw string) error {
	u, err := url.Parse(raw)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.Fragment != "" || u.User != nil {
		return errors.New("redirect_uri must be an absolute http(s) URL")
	}
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	if len(s.ui.redirectURIs) > 0 && !slices.Contains(s.ui.redirectURIs, raw) {
		return errors.New("redirect_uri is not registered")
	}
	return nil
}

// connectResult is what a Connect UI session reports.
type connectResult struct {
	authID           string // on success
	service          string // on success: the app's key
	errCode, errDesc string // on failure
}

func (s *Server) serveConnectUI(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	q := r.URL.Query()
	redirectURI, state := q.Get("redirect_uri"), q.Get("state")
	if redirectURI != "" {
		if err := s.checkRedirectURI(redirectURI); err != nil {
			// Never redirect to an unregistered place: show the error.
			connectPage(w, http.StatusBadRequest, "Connect error: "+err.Error(), nil, "")
			return
		}
	}
	report := func(status int, res connectResult) {
		if redirectURI != "" {
			s.redirectBack(w, r, redirectURI, state, res)
			return
		}
		origin, ok := s.targetOrigin(r)
		if !ok {
			connectPage(w, http.StatusBadRequest, "Connect error: no partner origin registered", nil, "")
			return
		}
		msg := map[string]any{"type": "authenticationSuccess", "authId": authIDValue(res.authID)}
		text := "Connected. You can close this window."
		if res.authID == "" {
			msg = map[string]any{"type": "authenticationError", "error": cmp.Or(res.errDesc, res.errCode)}
			text = "Connect error: " + cmp.Or(res.errDesc, res.errCode)
		}
		connectPage(w, status, text, msg, origin)
	}

	app, _ := strings.CutPrefix(r.URL.EscapedPath(), "/to/")
	if !validAppID(app) {
		report(http.StatusNotFound, connectResult{errCode: "invalid_request", errDesc: "Invalid app"})
		return
	}
	scheme := "http"
	if r.TLS != nil {
		scheme = "https"
	}
	grant, err := s.ConsumeConnectToken(q.Get("token"), scheme+"://"+r.Host+"/to/"+app)
	if err != nil {
		s.logf("fakezapier: connect UI refused a token for app %q: %v", app, err)
		report(http.StatusBadRequest, connectResult{errCode: "invalid_request", errDesc: err.Error()})
		return
	}
	o := s.nextOutcome()
	switch o.Kind {
	case ConnectHold:
		connectPage(w, http.StatusOK, "Waiting for you to authorize "+app+"…", nil, "")
	case ConnectThirdParty:
		w.Header().Set("Cache-Control", "no-store")
		http.Redirect(w, r, o.URL, http.StatusFound)
	case ConnectDeny:
		report(http.StatusOK, connectResult{
			errCode: cmp.Or(o.Error, "access_denied"),
			errDesc: cmp.Or(o.Description, "OAuth Failed: the user denied access"),
		})
	default:
		id, err := s.approve(grant, s.appUUID(app), q.Get("reconnect_id"), cmp.Or(o.Title, AccountTitle(grant.Tenant, grant.User)))
		if err != nil {
			report(http.StatusBadRequest, connectResult{errCode: "invalid_request", errDesc: err.Error()})
			return
		}
		s.logf("fakezapier: connect UI: connection %s for tenant=%q user=%q app=%q", id, grant.Tenant, grant.User, app)
		report(http.StatusOK, connectResult{authID: id, service: s.appKey(app)})
	}
}

// approve creates the connection, or re-authorizes reconnect_id, which must
// be one of the user's own connections to the app.
func (s *Server) approve(g ConnectGrant, appUUID, reconnectID, title string) (string, error) {
	if reconnectID == "" {
		return s.AddConnection(g.Tenant, g.User, appUUID, title), nil
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.connections[reconnectID]
	if !ok || c.tenant != g.Tenant || c.user != g.User || c.app != appUUID {
		return "", errors.New("Invalid reconnect_id")
	}
	c.expired = false
	return c.id, nil
}

// authIDValue is the authId of authenticationSuccess: a number, as Connect
// documents it, when the id is numeric.
func authIDValue(id string) any {
	n := json.Number(id)
	if _, err := n.Int64(); err == nil && !strings.ContainsAny(id, "+-.eE") {
		return n
	}
	return id
}

// appKey is the app's key as the success redirect's service names it: the
// implementation id, also when the Connect URL named the app by its UUID.
func (s *Server) appKey(app string) string {
	s.ui.mu.Lock()
	defer s.ui.mu.Unlock()
	for key, uuid := range s.ui.apps {
		if strings.EqualFold(uuid, app) {
			return key
		}
	}
	return app
}

// redirectBack is the redirect pattern's answer (zapier-api.md §3.3, §3.5):
// success is ?authentication_id=…&service=<app key>, with state only when
// Config.EchoStateOnSuccess is set; an error echoes state when one was
// given.
func (s *Server) redirectBack(w http.ResponseWriter, r *http.Request, redirectURI, state string, res connectResult) {
	u, _ := url.Parse(redirectURI) // checked by checkRedirectURI
	q := u.Query()
	if res.authID != "" {
		q.Set("authentication_id", res.authID)
		q.Set("service", res.service)
		if !s.cfg.EchoStateOnSuccess {
			state = ""
		}
	} else {
		q.Set("error", res.errCode)
		q.Set("error_description", res.errDesc)
	}
	if state != "" {
		q.Set("state", state)
	}
	u.RawQuery = q.Encode()
	w.Header().Set("Cache-Control", "no-store")
	http.Redirect(w, r, u.String(), http.StatusFound)
}

var connectPageTmpl = template.Must(template.New("connect").Parse(`<!doctype html>
<html><head><meta charset="utf-8"><title>Fake Zapier Connect</title></head>
<body><p id="status">{{.Text}}</p>
{{if .Message}}<script>
(function () {
  var message = {{.Message}}, target = {{.Target}};
  if (window.opener) {
    window.opener.postMessage(message, target);
  } else {
    document.getElementById("status").textContent += " (no opener to tell)";
  }
})();
</script>{{end}}
</body></html>
`))

// connectPage renders the popup's page; with a message, the page posts it
// to window.opener with the exact target origin.
func connectPage(w http.ResponseWriter, status int, text string, message map[string]any, target string) {
	w.Header().Set("Content-Type", "text/html; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	if err := connectPageTmpl.Execute(w, struct {
		Text    string
		Message map[string]any
		Target  string
	}{text, message, target}); err != nil {
		_, _ = fmt.Fprintf(w, "<!-- template: %v -->", err)
	}
}

// AccountTitle is the title the Connect UI gives a connection it creates by
// default: an e-mail address made from the user and the tenant, as a real
// app account's title often is ("alice" of "org_acme" is alice@acme.example).
func AccountTitle(tenant, user string) string {
	domain := titlePart(tenant)
	if d, ok := strings.CutPrefix(domain, "org-"); ok && d != "" {
		domain = d
	}
	return titlePart(user) + "@" + domain + ".example"
}

// titlePart lowercases s and keeps letters, digits, dots and hyphens; any
// other run of characters becomes one hyphen.
func titlePart(s string) string {
	var b strings.Builder
	hyphen := false
	for _, r := range strings.ToLower(s) {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r == '.' {
			b.WriteRune(r)
			hyphen = false
		} else if !hyphen && b.Len() > 0 {
			b.WriteByte('-')
			hyphen = true
		}
		if b.Len() >= 40 {
			break
		}
	}
	return cmp.Or(strings.Trim(b.String(), "-."), "user")
}
