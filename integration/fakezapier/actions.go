package fakezapier

// api.zapier.com actions and action runs (zapier-api.md §4.3–§4.6), and the
// documented Workflow API rate limits (§4.8).
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
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"slices"
	"strconv"
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

// RateLimits configure the Workflow API rate limits: at most PerIP requests
// per Window from one client address and PerPartner per Window with the
// partner's tokens; past either, every such request is answered 429 with
// Retry-After until Cooldown has passed. Zero limits are off.
type RateLimits struct {
	PerIP, PerPartner int
	Window            time.Duration // default 1 minute
	Cooldown          time.Duration // default 60 seconds
}

// DocumentedRateLimits are Zapier's documented limits (zapier-api.md §4.8).
var DocumentedRateLimits = RateLimits{PerIP: 60, PerPartner: 150, Window: time.Minute, Cooldown: 60 * time.Second}

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

// ActionRunRecord is a run as the fake created it.
type ActionRunRecord struct {
	ID             string
	ActionID       string
	ActionKey      string
	App            string
	Authentication string
	Inputs         json.RawMessage
	Tenant, User   string
	Created        time.Time
}

type issuedAction struct {
	app    string
	spec   ActionSpec
	issued time.Time
	used   bool
}

type actionRun struct {
	ActionRunRecord
	spec    ActionSpec
	doneAt  time.Time
	results []map[string]any
}

// actionsState is the Server's actions, runs and rate-limit state; the zero
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
	limits   RateLimits
	perIP    map[string]*rateBucket
	partner  rateBucket
}

type rateBucket struct {
	hits          []time.Time
	cooldownUntil time.Time
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

// SetRateLimits sets (or, with the zero value, turns off) the /v2 rate
// limits and forgets the requests counted so far. They are off by default;
// DocumentedRateLimits are Zapier's.
func (s *Server) SetRateLimits(l RateLimits) {
	if l.Window <= 0 {
		l.Window = time.Minute
	}
	if l.Cooldown <= 0 {
		l.Cooldown = 60 * time.Second
	}
	a := &s.actions
	a.mu.Lock()
	defer a.mu.Unlock()
	a.limits = l
	a.perIP = nil
	a.partner = rateBucket{}
}

// ActionStats returns a snapshot of the actions counters.
func (s *Server) ActionStats() ActionStats {
	s.actions.mu.Lock()
	defer s.actions.mu.Unlock()
	return s.actions.stats
}

// ActionRuns returns the runs created so far, oldest first.
func (s *Server) ActionRuns() []ActionRunRecord {
	a := &s.actions
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]ActionRunRecord, 0, len(a.runs))
	for _, r := range a.runs {
		out = append(out, r.ActionRunRecord)
	}
	slices.SortFunc(out, func(x, y ActionRunRecord) int { return x.Created.Compare(y.Created) })
	return out
}

// throttled applies the rate limits to one /v2 request and answers 429 when
// it is over them. A request counts against the partner when it carries a
// token this server issued.
func (s *Server) throttled(w http.ResponseWriter, r *http.Request, partner bool) bool {
	now := s.now()
	ip, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		ip = r.RemoteAddr
	}
	a := &s.actions
	a.mu.Lock()
	l := a.limits
	var wait time.Duration
	var limit int
	if l.PerIP > 0 {
		if a.perIP == nil {
			a.perIP = map[string]*rateBucket{}
		}
		b := a.perIP[ip]
		if b == nil {
			b = new(rateBucket)
			a.perIP[ip] = b
		}
		if d := b.take(now, l.PerIP, l); d > wait {
			wait, limit = d, l.PerIP
		}
	}
	if l.PerPartner > 0 && partner {
		if d := a.partner.take(now, l.PerPartner, l); d > wait {
			wait, limit = d, l.PerPartner
		}
	}
	if wait > 0 {
		a.stats.Throttled++
	}
	a.mu.Unlock()
	if wait == 0 {
		return false
	}
	secs := int(math.Ceil(wait.Seconds()))
	h := w.Header()
	h.Set("Retry-After", strconv.Itoa(secs))
	h.Set("X-RateLimit-Limit", strconv.Itoa(limit))
	h.Set("X-RateLimit-Remaining", "0")
	h.Set("X-RateLimit-Reset", strconv.FormatInt(now.Add(wait).Unix(), 10))
	s.logf("fakezapier: /v2 request throttled for %ds", secs)
	writeAPIError(w, http.StatusTooManyRequests, "throttled", "Throttled",
		fmt.Sprintf("Request was throttled. Expected available in %d seconds.", secs), nil)
	return true
}

// take counts one request; it returns the cooldown left when the request is
// over the limit (0 when it may proceed).
func (b *rateBucket) take(now time.Time, limit int, l RateLimits) time.Duration {
	if now.Before(b.cooldownUntil) {
		return b.cooldownUntil.Sub(now)
	}
	cut := 0
	for cut < len(b.hits) && !b.hits[cut].After(now.Add(-l.Window)) {
		cut++
	}
	b.hits = append(b.hits[:0], b.hits[cut:]...)
	if len(b.hits) >= limit {
		b.hits = b.hits[:0]
		b.cooldownUntil = now.Add(l.Cooldown)
		return l.Cooldown
	}
	b.hits = append(b.hits, now)
	return 0
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
// is accepted too (zapier-api.md §4.5).
type actionBody struct {
	Action         json.RawMessage `json:"action"`
	Authentication json.RawMessage `json:"authentication"`
	Inputs         json.RawMessage `json:"inputs"`
	Input          json.RawMessage `json:"input"`
}

func parseActionBody(body []byte) (actionBody, bool) {
	var wrapped struct {
		Data *actionBody `json:"data"`
	}
	if err := json.Unmarshal(body, &wrapped); err != nil {
		return actionBody{}, false
	}
	if wrapped.Data != nil {
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

func (s *Server) serveCreateRun(w http.ResponseWriter, req *apiRequest) {
	r := req.r
	if r.Method != http.MethodPost {
		methodNotAllowed(w, r, http.MethodPost)
		return
	}
	if !req.token.hasScope("action:run") {
		permissionDenied(w, "action:run")
		return
	}
	a := &s.actions
	refuse := func(param, detail string) {
		a.mu.Lock()
		a.stats.RunsRefused++
		a.mu.Unlock()
		s.logf("fakezapier: action run refused: %s: %s", param, detail)
		validationError(w, param, detail)
	}
	body, ok := parseActionBody(req.body)
	if !ok {
		refuse("data", "Malformed request.")
		return
	}
	var actionID string
	if json.Unmarshal(body.Action, &actionID) != nil || actionID == "" {
		refuse("action", "This field is required.")
		return
	}
	inputs := bytes.TrimSpace(body.Inputs)
	if len(inputs) == 0 || inputs[0] != '{' {
		refuse("inputs", "An object is required.")
		return
	}

	a.mu.Lock()
	ia := a.ids[actionID]
	var app string
	var spec ActionSpec
	used := false
	if ia != nil {
		app, spec, used = ia.app, ia.spec, ia.used
	}
	a.mu.Unlock()
	switch {
	case ia == nil:
		refuse("action", "Unknown action id; fetch one from /v2/actions.")
		return
	case used:
		a.mu.Lock()
		a.stats.ReusedActionIDs++
		a.mu.Unlock()
		refuse("action", "This action id was already used; fetch a fresh one from /v2/actions before every run.")
		return
	}
	authID, problem := s.checkAuthentication(body.Authentication, req.token, app, false)
	if problem != "" {
		refuse("authentication", problem)
		return
	}

	now := s.now()
	a.mu.Lock()
	if ia.used { // lost a race with another run of the same id
		a.stats.RunsRefused++
		a.stats.ReusedActionIDs++
		a.mu.Unlock()
		validationError(w, "action", "This action id was already used.")
		return
	}
	ia.used = true
	delay := DefaultActionRunDelay
	if a.delay != nil {
		delay = *a.delay
	}
	if spec.Delay != 0 {
		delay = max(spec.Delay, 0)
	}
	a.runSeq++
	run := &actionRun{
		ActionRunRecord: ActionRunRecord{
			ID: newRunID(), ActionID: actionID, ActionKey: spec.Key, App: app, Authentication: authID,
			Inputs: json.RawMessage(slices.Clone(inputs)), Tenant: req.token.tenant, User: req.token.user, Created: now,
		},
		spec:   spec,
		doneAt: now.Add(delay),
	}
	run.results = spec.Results
	if run.results == nil {
		run.results = []map[string]any{{"id": a.runSeq, "action": spec.Key, "inputs": run.Inputs}}
	}
	if a.runs == nil {
		a.runs = map[string]*actionRun{}
	}
	a.runs[run.ID] = run
	a.stats.RunsCreated++
	a.mu.Unlock()
	s.logf("fakezapier: action run %s of %q created for tenant=%q user=%q", run.ID, spec.Key, run.Tenant, run.User)
	writeJSON(w, http.StatusOK, map[string]any{"data": map[string]any{"type": "run", "id": run.ID}})
}

func (s *Server) serveGetRun(w http.ResponseWriter, req *apiRequest, id string) {
	r := req.r
	if r.Method != http.MethodGet {
		methodNotAllowed(w, r, http.MethodGet)
		return
	}
	if !req.token.hasScope("action:run") {
		permissionDenied(w, "action:run")
		return
	}
	now := s.now()
	a := &s.actions
	a.mu.Lock()
	run, ok := a.runs[id]
	if ok && (run.Tenant != req.token.tenant || run.User != req.token.user) {
		ok = false // another user's run does not exist for this one
	}
	var data map[string]any
	if ok {
		a.stats.RunPolls++
		data = map[string]any{"type": "run", "status": cmp.Or(run.spec.PendingStatus, "waiting"), "results": []any{}, "errors": []any{}}
		switch {
		case now.Before(run.doneAt):
		case len(run.spec.Errors) > 0:
			data["status"], data["errors"] = "error", run.spec.Errors
		default:
			data["status"], data["results"] = "success", run.results
		}
	}
	a.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
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

// newRunID is a random (version 4) UUID, as in the OpenAPI example.
func newRunID() string {
	b := make([]byte, 16)
	if _, err := rand.Read(b); err != nil {
		panic("fakezapier: crypto/rand: " + err.Error())
	}
	b[6] = b[6]&0x0f | 0x40
	b[8] = b[8]&0x3f | 0x80
	h := hex.EncodeToString(b)
	return h[:8] + "-" + h[8:12] + "-" + h[12:16] + "-" + h[16:20] + "-" + h[20:]
}
