package fakezapier

// Action runs (zapier-api.md §4.5–§4.7): POST /v2/action-runs starts one,
// GET /v2/action-runs/{id} polls it, and a run created with a callback_url
// is also reported by a signed POST (callbacks.go).

import (
	"bytes"
	"cmp"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"slices"
	"strings"
	"time"
)

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

type actionRun struct {
	ActionRunRecord
	spec        ActionSpec
	doneAt      time.Time
	results     []map[string]any
	callbackURL string // "" without a callback
}

// view is the run as GET /v2/action-runs/{id} reports it at now. It reads
// only fields that never change after creation, so it needs no lock.
func (r *actionRun) view(now time.Time) map[string]any {
	data := map[string]any{"type": "run", "status": cmp.Or(r.spec.PendingStatus, "waiting"), "results": []any{}, "errors": []any{}}
	switch {
	case now.Before(r.doneAt):
	case len(r.spec.Errors) > 0:
		data["status"], data["errors"] = "error", r.spec.Errors
	default:
		data["status"], data["results"] = "success", r.results
	}
	return data
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
	var callbackURL string
	if body.misplacedCallback {
		refuse("callback_url", "Must be inside data, next to inputs.")
		return
	}
	if body.CallbackURL != nil {
		var problem string
		if callbackURL, problem = s.checkCallbackURL(r.Context(), body.CallbackURL); problem != "" {
			refuse("callback_url", problem)
			return
		}
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
		spec:        spec,
		doneAt:      now.Add(delay),
		callbackURL: callbackURL,
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
	if callbackURL != "" {
		// After the answer, though a run that ends at once (Delay < 0) can
		// still call back before the client has read it, as Zapier's could.
		s.scheduleCallback(run)
	}
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
	if ok && (run.Tenant != req.token.tenant || run.User != req.token.user || strings.HasPrefix(run.ActionID, "stored:")) {
		ok = false // another user's run (or a stored action's) does not exist for this one
	}
	var data map[string]any
	if ok {
		a.stats.RunPolls++
		data = run.view(now)
	}
	a.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"data": data})
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
