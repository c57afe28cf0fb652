package fakezapier

// Stored Actions (Zapier's Actions API v1, the White Label API reference's
// "Stored Actions" section):
//
//   - POST   /actions/v1/stored-actions   creates one from
//     {"data":{"selected_api","action_type","action_key","connection_id","inputs"?}}
//     and answers {"type":"stored_action","id":<uuid>}. The triple is
//     required (documented); selected_api is the app's key, optionally
//     versioned "Key@1.0.0" (documented); only core actions can be stored
//     (documented: ActionSpec.External marks the others, refused with 400);
//     the connection must be the caller's own, unexpired, of that app (the
//     fake is as strict as for /v2/action-runs). Status 201 (assumed).
//   - POST   /actions/v1/stored-actions/{id}/run   {"data":{"inputs","page"?,
//     "callback_url"?}} → {"data":{"type":"run","id":<uuid>}} (documented
//     shape; status 202 and callback_url inside data are assumed, as for
//     /v2/action-runs). The callback is delivered like an action run's.
//   - GET    /actions/v1/stored-actions/{id}/runs/{run_id}   the flat
//     {"type","id","status","results","next_page","errors"} (documented).
//   - GET    /actions/v1/stored-actions/{id}   the record.
//   - DELETE /actions/v1/stored-actions/{id}   204 (documented).
//
// Another user's stored action (or run) is 404, as if it did not exist
// (assumed). Every route needs the action:run scope (assumed: the docs say
// only "OAuth 2.0").

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"time"
)

// StoredAction is a stored action as the fake holds it.
type StoredAction struct {
	ID           string
	Tenant, User string
	App          string // the app's UUID (selected_api resolved)
	SelectedAPI  string
	ActionType   string
	ActionKey    string
	ConnectionID string
	Created      time.Time
	spec         ActionSpec
}

// StoredActionStats counts the stored-actions routes' work.
type StoredActionStats struct {
	Created  int // POST stored-actions answered 201
	Refused  int // POST stored-actions answered 4xx (after authentication)
	Runs     int // POST …/run answered 2xx
	Polls    int // GET …/runs/{run_id} answered 200
	Deleted  int // DELETE answered 204
	NotFound int // a stored action (or run) that does not exist for the caller
}

type storedState struct {
	actions map[string]*StoredAction
	runs    map[string]*storedRun
	stats   StoredActionStats
}

type storedRun struct {
	stored string
	run    *actionRun
}

// StoredActions returns the stored actions that exist now, oldest first.
func (s *Server) StoredActions() []StoredAction {
	a := &s.actions
	a.mu.Lock()
	defer a.mu.Unlock()
	out := make([]StoredAction, 0, len(a.stored.actions))
	for _, sa := range a.stored.actions {
		out = append(out, *sa)
	}
	slices.SortFunc(out, func(x, y StoredAction) int { return x.Created.Compare(y.Created) })
	return out
}

// StoredActionStats returns a snapshot of the stored-actions counters.
func (s *Server) StoredActionStats() StoredActionStats {
	s.actions.mu.Lock()
	defer s.actions.mu.Unlock()
	return s.actions.stored.stats
}

// DeleteStoredAction deletes a stored action as if it were deleted at
// Zapier by someone else (reports whether it existed).
func (s *Server) DeleteStoredAction(id string) bool {
	a := &s.actions
	a.mu.Lock()
	defer a.mu.Unlock()
	_, ok := a.stored.actions[id]
	delete(a.stored.actions, id)
	return ok
}

// serveStoredActions routes /actions/v1/stored-actions….
func (s *Server) serveStoredActions(w http.ResponseWriter, req *apiRequest) {
	if !req.token.hasScope("action:run") {
		permissionDenied(w, "action:run")
		return
	}
	p := strings.TrimSuffix(req.r.URL.EscapedPath(), "/")
	rest, ok := strings.CutPrefix(p, "/actions/v1/stored-actions")
	if !ok {
		notFound(w)
		return
	}
	var seg []string
	if rest != "" {
		if rest[0] != '/' {
			notFound(w)
			return
		}
		for _, part := range strings.Split(rest[1:], "/") {
			v, err := url.PathUnescape(part)
			if err != nil || v == "" {
				notFound(w)
				return
			}
			seg = append(seg, v)
		}
	}
	r := req.r
	switch {
	case len(seg) == 0:
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		s.serveCreateStoredAction(w, req)
	case len(seg) == 1:
		switch r.Method {
		case http.MethodGet:
			s.serveGetStoredAction(w, req, seg[0])
		case http.MethodDelete:
			s.serveDeleteStoredAction(w, req, seg[0])
		default:
			methodNotAllowed(w, r, http.MethodGet, http.MethodDelete)
		}
	case len(seg) == 2 && seg[1] == "run":
		if r.Method != http.MethodPost {
			methodNotAllowed(w, r, http.MethodPost)
			return
		}
		s.serveRunStoredAction(w, req, seg[0])
	case len(seg) == 3 && seg[1] == "runs":
		if r.Method != http.MethodGet {
			methodNotAllowed(w, r, http.MethodGet)
			return
		}
		s.serveGetStoredRun(w, req, seg[0], seg[2])
	default:
		notFound(w)
	}
}

// ownStoredLocked is the caller's stored action id, or nil (counted).
func (a *actionsState) ownStoredLocked(tok *accessToken, id string) *StoredAction {
	sa := a.stored.actions[id]
	if sa == nil || sa.Tenant != tok.tenant || sa.User != tok.user {
		a.stored.stats.NotFound++
		return nil
	}
	return sa
}

func (s *Server) serveCreateStoredAction(w http.ResponseWriter, req *apiRequest) {
	a := &s.actions
	refuse := func(param, detail string) {
		a.mu.Lock()
		a.stored.stats.Refused++
		a.mu.Unlock()
		s.logf("fakezapier: stored action refused: %s: %s", param, detail)
		validationError(w, param, detail)
	}
	var body struct {
		Data *struct {
			SelectedAPI  *string         `json:"selected_api"`
			ActionType   *string         `json:"action_type"`
			ActionKey    *string         `json:"action_key"`
			ActionID     json.RawMessage `json:"action_id"`
			ConnectionID json.RawMessage `json:"connection_id"`
			Inputs       json.RawMessage `json:"inputs"`
		} `json:"data"`
	}
	if err := json.Unmarshal(req.body, &body); err != nil || body.Data == nil {
		refuse("data", "Malformed request.")
		return
	}
	d := body.Data
	switch {
	case d.ActionID != nil:
		refuse("action_id", "Not accepted: give the triple (selected_api, action_type, action_key).")
		return
	case d.SelectedAPI == nil || *d.SelectedAPI == "":
		refuse("selected_api", "This field is required.")
		return
	case d.ActionType == nil || *d.ActionType == "":
		refuse("action_type", "This field is required.")
		return
	case d.ActionKey == nil || *d.ActionKey == "":
		refuse("action_key", "This field is required.")
		return
	}
	if in := bytes.TrimSpace(d.Inputs); len(in) > 0 && !bytes.Equal(in, []byte("null")) && in[0] != '{' {
		refuse("inputs", "An object is required.")
		return
	}
	// The documented example is lower case ("read"); the /v2 catalogue's
	// upper-case types are refused so a client sending them is seen.
	typ := *d.ActionType
	if typ != strings.ToLower(typ) || !validActionType(strings.ToUpper(typ)) {
		refuse("action_type", `"`+typ+`" is not a valid choice.`)
		return
	}
	key, _, _ := strings.Cut(*d.SelectedAPI, "@") // "Key@1.0.0": the version is optional
	app := s.appUUID(key)

	a.mu.Lock()
	all, ok := a.catalogs[app]
	if !ok {
		all = DefaultActions()
	}
	a.mu.Unlock()
	i := slices.IndexFunc(all, func(spec ActionSpec) bool {
		return spec.Key == *d.ActionKey && actionType(spec) == strings.ToUpper(typ)
	})
	if i < 0 {
		refuse("action_key", "No "+typ+" action "+*d.ActionKey+" in "+*d.SelectedAPI+".")
		return
	}
	spec := all[i]
	if spec.External {
		refuse("action_key", "Only core actions can be stored; external and custom actions cannot.")
		return
	}
	connID, problem := s.checkAuthentication(d.ConnectionID, req.token, app, false)
	if problem != "" {
		refuse("connection_id", problem)
		return
	}
	sa := &StoredAction{
		ID: newRunID(), Tenant: req.token.tenant, User: req.token.user, App: app, SelectedAPI: *d.SelectedAPI,
		ActionType: typ, ActionKey: spec.Key, ConnectionID: connID, Created: s.now(), spec: spec,
	}
	a.mu.Lock()
	if a.stored.actions == nil {
		a.stored.actions = map[string]*StoredAction{}
	}
	a.stored.actions[sa.ID] = sa
	a.stored.stats.Created++
	a.mu.Unlock()
	s.logf("fakezapier: stored action %s of %q created for tenant=%q user=%q", sa.ID, spec.Key, sa.Tenant, sa.User)
	writeJSON(w, http.StatusCreated, map[string]any{"type": "stored_action", "id": sa.ID})
}

func storedView(sa *StoredAction) map[string]any {
	return map[string]any{"type": "stored_action", "id": sa.ID, "selected_api": sa.SelectedAPI,
		"action_type": sa.ActionType, "action_key": sa.ActionKey, "connection_id": sa.ConnectionID}
}

func (s *Server) serveGetStoredAction(w http.ResponseWriter, req *apiRequest, id string) {
	a := &s.actions
	a.mu.Lock()
	sa := a.ownStoredLocked(req.token, id)
	var view map[string]any
	if sa != nil {
		view = storedView(sa)
	}
	a.mu.Unlock()
	if sa == nil {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, view)
}

func (s *Server) serveDeleteStoredAction(w http.ResponseWriter, req *apiRequest, id string) {
	a := &s.actions
	a.mu.Lock()
	sa := a.ownStoredLocked(req.token, id)
	if sa != nil {
		delete(a.stored.actions, id)
		a.stored.stats.Deleted++
	}
	a.mu.Unlock()
	if sa == nil {
		notFound(w)
		return
	}
	w.WriteHeader(http.StatusNoContent)
}

func (s *Server) serveRunStoredAction(w http.ResponseWriter, req *apiRequest, id string) {
	a := &s.actions
	a.mu.Lock()
	sa := a.ownStoredLocked(req.token, id)
	var saCopy StoredAction
	if sa != nil {
		saCopy = *sa
	}
	a.mu.Unlock()
	if sa == nil {
		notFound(w)
		return
	}
	var body struct {
		Data *struct {
			Inputs      json.RawMessage `json:"inputs"`
			Page        json.RawMessage `json:"page"`
			CallbackURL json.RawMessage `json:"callback_url"`
		} `json:"data"`
		CallbackURL json.RawMessage `json:"callback_url"`
	}
	if err := json.Unmarshal(req.body, &body); err != nil || body.Data == nil {
		validationError(w, "data", "Malformed request.")
		return
	}
	if body.CallbackURL != nil {
		validationError(w, "callback_url", "Must be inside data, next to inputs.")
		return
	}
	inputs := bytes.TrimSpace(body.Data.Inputs)
	if len(inputs) == 0 || bytes.Equal(inputs, []byte("null")) {
		inputs = []byte("{}")
	}
	if inputs[0] != '{' {
		validationError(w, "inputs", "An object is required.")
		return
	}
	var callbackURL string
	if body.Data.CallbackURL != nil {
		var problem string
		if callbackURL, problem = s.checkCallbackURL(req.r.Context(), body.Data.CallbackURL); problem != "" {
			validationError(w, "callback_url", problem)
			return
		}
	}
	// The connection may have gone since the stored action was created.
	raw, _ := json.Marshal(saCopy.ConnectionID)
	if _, problem := s.checkAuthentication(raw, req.token, saCopy.App, false); problem != "" {
		validationError(w, "connection_id", problem)
		return
	}
	now := s.now()
	a.mu.Lock()
	delay := DefaultActionRunDelay
	if a.delay != nil {
		delay = *a.delay
	}
	spec := saCopy.spec
	if spec.Delay != 0 {
		delay = max(spec.Delay, 0)
	}
	a.runSeq++
	run := &actionRun{
		ActionRunRecord: ActionRunRecord{
			ID: newRunID(), ActionID: "stored:" + saCopy.ID, ActionKey: spec.Key, App: saCopy.App,
			Authentication: saCopy.ConnectionID, Inputs: json.RawMessage(slices.Clone(inputs)),
			Tenant: req.token.tenant, User: req.token.user, Created: now,
		},
		spec: spec, doneAt: now.Add(delay), callbackURL: callbackURL,
	}
	run.results = spec.Results
	if run.results == nil {
		run.results = []map[string]any{{"id": a.runSeq, "action": spec.Key, "inputs": run.Inputs}}
	}
	if a.stored.runs == nil {
		a.stored.runs = map[string]*storedRun{}
	}
	a.stored.runs[run.ID] = &storedRun{stored: saCopy.ID, run: run}
	a.stored.stats.Runs++
	// A run of a stored action is a run too: ActionRuns and RunsCreated
	// count it (its ActionID is "stored:<id>"); /v2/action-runs/{id} does
	// not serve it.
	if a.runs == nil {
		a.runs = map[string]*actionRun{}
	}
	a.runs[run.ID] = run
	a.stats.RunsCreated++
	a.mu.Unlock()
	s.logf("fakezapier: stored action %s run %s created", saCopy.ID, run.ID)
	writeJSON(w, http.StatusAccepted, map[string]any{"data": map[string]any{"type": "run", "id": run.ID}})
	if callbackURL != "" {
		s.scheduleCallback(run)
	}
}

func (s *Server) serveGetStoredRun(w http.ResponseWriter, req *apiRequest, id, runID string) {
	now := s.now()
	a := &s.actions
	a.mu.Lock()
	sr := a.stored.runs[runID]
	ok := sr != nil && sr.stored == id && sr.run.Tenant == req.token.tenant && sr.run.User == req.token.user
	var data map[string]any
	if ok {
		a.stored.stats.Polls++
		data = sr.run.view(now)
		data["id"] = runID
		data["next_page"] = "0"
	} else {
		a.stored.stats.NotFound++
	}
	a.mu.Unlock()
	if !ok {
		notFound(w)
		return
	}
	writeJSON(w, http.StatusOK, data)
}
