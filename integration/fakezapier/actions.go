package fakezapier

// api.zapier.com actions and action runs (zapier-api.md §4.3–§4.6).
//
//   - GET  /v2/actions?app=&action_type=&limit=&offset=   an app's actions;
//     every listing issues a new, unique id per action; keys are stable
//   - POST /v2/actions/{id}/inputs   the action's input fields
//   - POST /v2/action-runs            starts a run; accepts only an action id
//     this server issued and has not seen used, and only the caller's own
//     unexpired connection to the action's app
//   - GET  /v2/action-runs/{id}       the run, for its owner only: a pending
//     status until the action's delay has passed, then success or error
//
// Where Zapier's docs are silent the fake is strict: a reused action id is
// refused, so a gateway that caches ids fails its tests.

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"time"
)

// DefaultActionRunDelay is how long a run stays pending unless its action or
// SetActionRunDelay says otherwise.
const DefaultActionRunDelay = time.Second

// Issued action ids are forgotten (and then refused) this long after their
// listing, so a long demo does not grow without bound.
const (
	actionIDLifetime = time.Hour
	actionSweepEvery = 1024
)

// ActionSpec is one action of an app in the fake's catalog.
type ActionSpec struct {
	Key         string // stable key; required
	ActionType  string // READ, READ_BULK, SEARCH, SEARCH_AND_WRITE, SEARCH_OR_WRITE or WRITE; default WRITE
	Title       string // default: the key
	Description string
	IsInstant   bool
	// Inputs are the items POST /v2/actions/{id}/inputs returns; default
	// one required "text" input field.
	Inputs []map[string]any
	// Delay is how long a run stays pending; 0 takes the server's delay
	// (SetActionRunDelay), a negative value finishes at once.
	Delay time.Duration
	// PendingStatus is reported while the run is pending; default
	// "waiting" (the OpenAPI value; the guides also use queued/running).
	PendingStatus string
	// Results of a successful run; default one result echoing the run's
	// inputs: [{"id": <n>, "action": <key>, "inputs": {…}}].
	Results []map[string]any
	// Errors, when set, make every run of the action end with status
	// "error" and these errors.
	Errors []RunError
	// External marks an action that is not a core action (an external or
	// custom one): it cannot be stored (stored_actions.go).
	External bool
}

// RunError is an item of a run's errors (zapier-api.md §4.6).
type RunError struct {
	Code   string         `json:"code"` // user, authentication, partner, system, throttled, …
	Title  string         `json:"title"`
	Detail string         `json:"detail"`
	Delay  *int           `json:"delay"`
	Meta   map[string]any `json:"meta"`
}

// InputField builds an input field as /inputs returns it.
func InputField(id, title string, required bool) map[string]any {
	return map[string]any{
		"type": "input_field", "id": id, "title": title, "is_required": required,
		"value_type": "STRING", "default_value": "", "depends_on": []string{},
		"description": "", "placeholder": "", "invalidates_input_fields": false,
	}
}

// DefaultActions is the catalog of every app that SetActions was not called
// for, so demos work with any app.
func DefaultActions() []ActionSpec {
	return []ActionSpec{
		{Key: "send_message", ActionType: "WRITE", Title: "Send Channel Message", Description: "Posts a message to a channel.",
			Inputs: []map[string]any{InputField("channel", "Channel", true), InputField("text", "Message Text", true)}},
		{Key: "find_user", ActionType: "SEARCH", Title: "Find User", Description: "Finds a user by email.",
			Inputs: []map[string]any{InputField("email", "Email", true)}},
		{Key: "new_message", ActionType: "READ", Title: "New Message", Description: "Triggers on a new message.", IsInstant: true},
	}
}

// ActionStats counts the actions routes' work.
type ActionStats struct {
	Listings        int // GET /v2/actions answered 200
	ActionIDsIssued int
	InputRequests   int // POST /v2/actions/{id}/inputs answered 200
	RunsCreated     int
	RunsRefused     int // POST /v2/action-runs answered 4xx
	RunPolls        int // GET /v2/action-runs/{id} answered 200
	ReusedActionIDs int // runs refused because their action id was already used
	Throttled       int // /v2 requests answered 429 by the rate limits
}

type issuedAction struct {
	app    string
	spec   ActionSpec
	issued time.Time
	used   bool
}

// actionsState is the Server's actions and runs state; the zero
// value is ready. It has its own lock and never takes Server.mu while
// holding it.
type actionsState struct {
	mu       sync.Mutex
	catalogs map[string][]ActionSpec // app → actions
	delay    *time.Duration
	ids      map[string]*issuedAction
	issued   int
	runs     map[string]*actionRun
	runSeq   int
	stats    ActionStats
	stored   storedState // stored actions (stored_actions.go)
}

// SetActions sets an app's catalog (app is the app UUID the API uses).
func (s *Server) SetActions(app string, actions ...ActionSpec) {
	a := &s.actions
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.catalogs == nil {
		a.catalogs = map[string][]ActionSpec{}
	}
	a.catalogs[app] = slices.Clone(actions)
}

// SetActionRunDelay sets how long runs stay pending when their action does
// not say (default DefaultActionRunDelay). It applies to runs created later.
func (s *Server) SetActionRunDelay(d time.Duration) {
	s.actions.mu.Lock()
	s.actions.delay = &d
	s.actions.mu.Unlock()
}

// ActionStats returns a snapshot of the actions counters.
func (s *Server) ActionStats() ActionStats {
	s.actions.mu.Lock()
	st := s.actions.stats
	s.actions.mu.Unlock()
	s.rate.mu.Lock()
	st.Throttled = s.rate.throttledTotal
	s.rate.mu.Unlock()
	return st
}

// serveActions routes /v2/actions… and /v2/action-runs….
func (s *Server) serveActions(w http.ResponseWriter, req *apiRequest) {
	p := strings.TrimSuffix(req.r.URL.EscapedPath(), "/")
	segment := func(prefix string) (string, bool) {
		rest, ok := strings.CutPrefix(p, prefix)
		if !ok {
			return "", false
		}
		id, err := url.PathUnescape(rest)
		return id, err == nil && id != "" && !strings.Contains(rest, "/")
	}
	switch {
	case p == "/v2/actions":
		s.serveActionList(w, req)
	case strings.HasSuffix(p, "/inputs"):
		p = strings.TrimSuffix(p, "/inputs")
		if id, ok := segment("/v2/actions/"); ok {
			s.serveActionInputs(w, req, id)
			return
		}
		notFound(w)
	case p == "/v2/action-runs":
		s.serveCreateRun(w, req)
	default:
		if id, ok := segment("/v2/action-runs/"); ok {
			s.serveGetRun(w, req, id)
			return
		}
		notFound(w)
	}
}

func (s *Server) serveActionList(w http.ResponseWriter, req *apiRequest) {
	r := req.r
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if !req.token.hasScope("zap") {
		permissionDenied(w, "zap")
		return
	}
	q := r.URL.Query()
	app := q.Get("app")
	if app == "" {
		validationError(w, "app", "This field is required.")
		return
	}
	typ := q.Get("action_type")
	if typ != "" && !validActionType(typ) {
		validationError(w, "action_type", `"`+typ+`" is not a valid choice.`)
		return
	}
	limit, offset, ok := pageParams(w, q)
	if !ok {
		return
	}

	a := &s.actions
	now := s.now()
	a.mu.Lock()
	all, ok := a.catalogs[app]
	if !ok {
		all = DefaultActions()
	}
	var matching []ActionSpec
	for _, spec := range all {
		if typ == "" || actionType(spec) == typ {
			matching = append(matching, spec)
		}
	}
	page := matching[min(offset, len(matching)):min(offset+limit, len(matching))]
	items := make([]map[string]any, 0, len(page))
	if a.ids == nil {
		a.ids = map[string]*issuedAction{}
	}
	for _, spec := range page {
		id := "core:" + randomHex(10)
		a.ids[id] = &issuedAction{app: app, spec: spec, issued: now}
		items = append(items, map[string]any{
			"type": "action", "id": id, "key": spec.Key, "app": app, "action_type": actionType(spec),
			"is_instant": spec.IsInstant, "title": cmp.Or(spec.Title, spec.Key), "description": spec.Description,
		})
	}
	a.stats.Listings++
	a.stats.ActionIDsIssued += len(page)
	a.sweepLocked(now, len(page))
	a.mu.Unlock()

	writeJSON(w, http.StatusOK, pagedEnvelope(r, len(matching), limit, offset, items))
}

// sweepLocked forgets old action ids now and then.
func (a *actionsState) sweepLocked(now time.Time, issued int) {
	a.issued += issued
	if a.issued < actionSweepEvery {
		return
	}
	a.issued = 0
	for id, ia := range a.ids {
		if now.Sub(ia.issued) > actionIDLifetime {
			delete(a.ids, id)
		}
	}
}

// actionBody is the {"data":{"action","authentication","inputs"}} body of
// the OpenAPI reference; the guides' flat {"action","authentication","input"}
// is accepted too (zapier-api.md §4.5), each with its callback_url.
type actionBody struct {
	Action         json.RawMessage `json:"action"`
	Authentication json.RawMessage `json:"authentication"`
	Inputs         json.RawMessage `json:"inputs"`
	Input          json.RawMessage `json:"input"`
	CallbackURL    json.RawMessage `json:"callback_url"` // nil when absent

	// misplacedCallback: a top-level callback_url next to a data wrapper,
	// which neither documented form has; Zapier would likely ignore it and
	// never call back, so the fake refuses it to surface the bug.
	misplacedCallback bool
}

func parseActionBody(body []byte) (actionBody, bool) {
	var wrapped struct {
		Data        *actionBody     `json:"data"`
		CallbackURL json.RawMessage `json:"callback_url"`
	}
	if err := json.Unmarshal(body, &wrapped); err != nil {
		return actionBody{}, false
	}
	if wrapped.Data != nil {
		wrapped.Data.misplacedCallback = wrapped.CallbackURL != nil
		return *wrapped.Data, true
	}
	var flat actionBody
	if err := json.Unmarshal(body, &flat); err != nil {
		return actionBody{}, false
	}
	if flat.Inputs == nil {
		flat.Inputs = flat.Input
	}
	return flat, true
}

// checkAuthentication reports why raw (a connection id, or null when
// nullOK) cannot be used by the caller with app, or "" when it can.
func (s *Server) checkAuthentication(raw json.RawMessage, tok *accessToken, app string, nullOK bool) (id, problem string) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 {
		return "", "This field is required."
	}
	if bytes.Equal(raw, []byte("null")) {
		if nullOK {
			return "", ""
		}
		return "", "This app requires an authentication."
	}
	if json.Unmarshal(raw, &id) != nil {
		var n json.Number
		if json.Unmarshal(raw, &n) != nil {
			return "", "Must be a string."
		}
		id = n.String()
	}
	s.mu.Lock()
	c, ok := s.connections[id]
	var expired bool
	if ok {
		ok = c.tenant == tok.tenant && c.user == tok.user
		expired = c.expired
		if ok && c.app != app {
			s.mu.Unlock()
			return id, "Authentication is for another app."
		}
	}
	s.mu.Unlock()
	switch {
	case !ok:
		return id, "Authentication not found."
	case expired:
		return id, "Authentication is expired; reconnect it."
	}
	return id, ""
}

func (s *Server) serveActionInputs(w http.ResponseWriter, req *apiRequest, actionID string) {
	r := req.r
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return
	}
	if !req.token.hasScope("zap:write") {
		permissionDenied(w, "zap:write")
		return
	}
	a := &s.actions
	a.mu.Lock()
	ia := a.ids[actionID]
	var spec ActionSpec
	var app string
	if ia != nil {
		spec, app = ia.spec, ia.app
	}
	a.mu.Unlock()
	if ia == nil {
		notFound(w)
		return
	}
	body, ok := parseActionBody(req.body)
	if !ok {
		writeAPIError(w, http.StatusBadRequest, "parse_error", "ParseError", "Malformed request.", nil)
		return
	}
	if _, problem := s.checkAuthentication(body.Authentication, req.token, app, true); problem != "" {
		validationError(w, "authentication", problem)
		return
	}
	fields := spec.Inputs
	if fields == nil {
		fields = []map[string]any{InputField("text", "Text", true)}
	}
	a.mu.Lock()
	a.stats.InputRequests++
	a.mu.Unlock()
	writeJSON(w, http.StatusOK, map[string]any{
		"links": listLinks{},
		"meta":  map[string]any{"count": len(fields), "limit": nil, "offset": 0},
		"data":  fields,
	})
}

func actionType(spec ActionSpec) string { return cmp.Or(spec.ActionType, "WRITE") }

func validActionType(t string) bool {
	switch t {
	case "READ", "READ_BULK", "SEARCH", "SEARCH_AND_WRITE", "SEARCH_OR_WRITE", "WRITE":
		return true
	}
	return false
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic("fakezapier: crypto/rand: " + err.Error())
	}
	return hex.EncodeToString(b)
}
