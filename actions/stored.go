package actions

// Stored Actions (Zapier's Actions API v1): a run costs one call to Zapier
// once the (user, connection, app, action) has a stored action, instead of
// a fresh action id and a create. The store keeps each user's stored action
// ids under the user's keyed storage name, and the refusals of actions that
// cannot be stored, so the refusal is not paid for again.

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"net/url"
	"path"
	"strings"
	"time"

	"github.com/caddyserver/certmagic"

	"github.com/zapgate/caddy-zapier/gateway"
	"github.com/zapgate/caddy-zapier/zapierapi"
)

// RunVia is how POST run reaches Zapier.
type RunVia string

// The run_via values.
const (
	// RunViaAuto runs through a stored action, and falls back to
	// /v2/action-runs for an action Zapier will not store.
	RunViaAuto RunVia = "auto"
	// RunViaStored runs only through stored actions: an action Zapier will
	// not store is an error (action_not_storable).
	RunViaStored RunVia = "stored"
	// RunViaActionRuns is the /v2/action-runs path only (a fresh action id
	// and a create per run).
	RunViaActionRuns RunVia = "action_runs"
)

// ParseRunVia reads a run_via value; "" is RunViaAuto.
func ParseRunVia(s string) (RunVia, error) {
	switch v := RunVia(s); v {
	case "":
		return RunViaAuto, nil
	case RunViaAuto, RunViaStored, RunViaActionRuns:
		return v, nil
	}
	return "", fmt.Errorf("run_via must be auto, stored or action_runs, not %q", s)
}

const (
	// StoredPrefix is where the stored-action records live:
	// zapier/stored-actions/<the user's keyed name>/<hash of the action>.
	StoredPrefix = "zapier/stored-actions"
	// StoredRefusalTTL is how long an action Zapier would not store is run
	// through /v2/action-runs before storing it is tried again.
	StoredRefusalTTL = 24 * time.Hour
	// storedAPIPath is the Actions API v1's stored actions, under the API URL.
	storedAPIPath = "/actions/v1/stored-actions"
)

// StoredRecord is what the gateway keeps about one (user, connection, app,
// action): the stored action's id at Zapier, or that Zapier refused to
// store it.
type StoredRecord struct {
	ID           string    `json:"id,omitempty"` // the stored action's id at Zapier
	App          string    `json:"app"`          // the app's UUID
	ConnectionID string    `json:"connection_id"`
	Action       string    `json:"action"`
	ActionType   string    `json:"action_type,omitempty"` // as the request gave it ("" when it did not)
	Created      time.Time `json:"created"`
	// RefusedAt is when Zapier refused to store the action (ID is empty
	// then); runs go through /v2/action-runs until StoredRefusalTTL passes.
	RefusedAt time.Time `json:"refused_at,omitzero"`
}

// StoredStore is the users' stored actions: their records in storage, and
// their deletion at Zapier (disconnect, offboarding).
type StoredStore struct {
	Storage certmagic.Storage
	Names   *gateway.Namespace
	Caller  *gateway.Caller
	Now     func() time.Time
}

func (s *StoredStore) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// userDir is the storage directory of id's records.
func (s *StoredStore) userDir(ctx context.Context, id gateway.Identity) (string, error) {
	name, err := s.Names.Name(ctx, id)
	if err != nil {
		return "", err
	}
	return path.Join(StoredPrefix, name), nil
}

// recordKey is the storage key of id's record of one action.
func (s *StoredStore) recordKey(ctx context.Context, id gateway.Identity, appUUID, connID, action, actionType string) (string, error) {
	dir, err := s.userDir(ctx, id)
	if err != nil {
		return "", err
	}
	sum := sha256.Sum256([]byte(appUUID + "\x00" + connID + "\x00" + action + "\x00" + actionType))
	return path.Join(dir, hex.EncodeToString(sum[:])), nil
}

// Get loads a record; nil when there is none.
func (s *StoredStore) Get(ctx context.Context, key string) (*StoredRecord, error) {
	return loadRecord[StoredRecord](ctx, s.Storage, key, "stored action record")
}

// Put stores a record.
func (s *StoredStore) Put(ctx context.Context, key string, rec StoredRecord) error {
	data, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	if err := s.Storage.Store(ctx, key, data); err != nil {
		return fmt.Errorf("storing stored action record: %w", err)
	}
	return nil
}

// Delete forgets a record (none is fine).
func (s *StoredStore) Delete(ctx context.Context, key string) error {
	if err := s.Storage.Delete(ctx, key); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return err
	}
	return nil
}

// StoreName names the store in offboarding's report.
func (s *StoredStore) StoreName() string { return "stored_actions" }

// Forget deletes the scope's stored actions at Zapier (unless
// KeepUpstream) and their records. A tenant's users are sc.Known.
func (s *StoredStore) Forget(ctx context.Context, sc gateway.Scope) (gateway.StoreReport, error) {
	var rep gateway.StoreReport
	ids := sc.Known
	if sc.User != "" {
		ids = []gateway.Identity{{Tenant: sc.Tenant, User: sc.User}}
	}
	var errs []error
	for _, id := range ids {
		if !sc.Matches(id) {
			continue
		}
		n, up, err := s.forget(ctx, id, "", sc.KeepUpstream)
		rep.Deleted += n
		rep.Upstream += up
		if err != nil {
			rep.Failed++
			errs = append(errs, err)
		}
	}
	return rep, errors.Join(errs...)
}

// ForgetConnection deletes the stored actions of one of id's connections
// (a disconnect): at Zapier unless keepUpstream, and their records. It
// reports how many records it deleted.
func (s *StoredStore) ForgetConnection(ctx context.Context, id gateway.Identity, connID string, keepUpstream bool) (int, error) {
	n, _, err := s.forget(ctx, id, connID, keepUpstream)
	return n, err
}

// forget deletes id's records (of connection connID, or all with ""),
// the stored actions at Zapier first unless keepUpstream; a record whose
// deletion at Zapier fails stays, so running it again finishes the job.
func (s *StoredStore) forget(ctx context.Context, id gateway.Identity, connID string, keepUpstream bool) (deleted, upstream int, err error) {
	dir, err := s.userDir(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	keys, err := s.Storage.List(ctx, dir, false)
	if errors.Is(err, fs.ErrNotExist) {
		return 0, 0, nil
	}
	if err != nil {
		return 0, 0, err
	}
	var errs []error
	for _, key := range keys {
		rec, err := s.Get(ctx, key)
		if err != nil {
			errs = append(errs, err)
			continue
		}
		if rec == nil || (connID != "" && rec.ConnectionID != connID) {
			continue
		}
		if rec.ID != "" && !keepUpstream {
			gone, err := s.deleteAtZapier(ctx, id, rec.ID)
			if err != nil {
				errs = append(errs, err)
				continue
			}
			if !gone {
				upstream++
			}
		}
		if err := s.Delete(ctx, key); err != nil {
			errs = append(errs, err)
			continue
		}
		deleted++
	}
	if connID == "" && len(errs) == 0 {
		_ = s.Storage.Delete(ctx, dir) // the empty directory, where storage has them
	}
	return deleted, upstream, errors.Join(errs...)
}

// deleteAtZapier deletes a stored action; gone when Zapier no longer had it.
func (s *StoredStore) deleteAtZapier(ctx context.Context, id gateway.Identity, storedID string) (gone bool, err error) {
	c := s.Caller
	err = c.Call(ctx, id, func(ctx context.Context, access string) error {
		return c.Client.DoJSON(ctx, "delete stored action", http.MethodDelete, storedURL(c.APIURL, storedID), access, nil, nil)
	})
	if zerr, ok := zapierapi.AsError(err); ok && (zerr.StatusCode == http.StatusNotFound || zerr.StatusCode == http.StatusGone) {
		return true, nil
	}
	return false, err
}

// storedURL is the URL of a stored action, with more path segments after it.
func storedURL(apiURL, storedID string, more ...string) string {
	u := strings.TrimRight(apiURL, "/") + storedAPIPath
	if storedID != "" {
		u += "/" + url.PathEscape(storedID)
	}
	for _, m := range more {
		u += "/" + url.PathEscape(m)
	}
	return u
}

// storedCreate is the body of POST /actions/v1/stored-actions.
type storedCreate struct {
	Data struct {
		SelectedAPI  string `json:"selected_api"`
		ActionType   string `json:"action_type"`
		ActionKey    string `json:"action_key"`
		ConnectionID string `json:"connection_id"`
	} `json:"data"`
}

// createStored creates a stored action; its id.
func createStored(ctx context.Context, c *gateway.Caller, id gateway.Identity, selectedAPI, actionType, actionKey, connID string) (string, error) {
	var body storedCreate
	// The documented example's action_type is lower case ("read").
	body.Data.SelectedAPI, body.Data.ActionType, body.Data.ActionKey, body.Data.ConnectionID = selectedAPI, strings.ToLower(actionType), actionKey, connID
	var resp struct {
		ID json.RawMessage `json:"id"`
	}
	const op = "create stored action"
	err := c.Call(ctx, id, func(ctx context.Context, access string) error {
		return c.Client.DoJSON(ctx, op, http.MethodPost, storedURL(c.APIURL, ""), access, body, &resp)
	})
	if err != nil {
		return "", err
	}
	var sid string
	if json.Unmarshal(resp.ID, &sid) != nil || !ValidRunID(sid) {
		return "", &zapierapi.Error{Kind: zapierapi.KindFailed, Op: op, Err: errors.New("malformed response: no stored action id")}
	}
	return sid, nil
}

// storedRunBody is the body of POST …/{id}/run: the run's inputs and the
// callback URL inside data (as /v2/action-runs takes it: assumed).
type storedRunBody struct {
	Data struct {
		Inputs      json.RawMessage `json:"inputs"`
		CallbackURL string          `json:"callback_url,omitempty"`
	} `json:"data"`
}

// runStored runs a stored action once (never retried); the run id.
func runStored(ctx context.Context, c *gateway.Caller, id gateway.Identity, storedID string, inputs json.RawMessage, callbackURL string) (string, error) {
	var body storedRunBody
	body.Data.Inputs, body.Data.CallbackURL = inputs, callbackURL
	if s := strings.TrimSpace(string(inputs)); s == "" || s == "null" {
		body.Data.Inputs = json.RawMessage("{}")
	}
	var resp struct {
		Data struct {
			ID json.RawMessage `json:"id"`
		} `json:"data"`
	}
	const op = "run stored action"
	err := c.Call(ctx, id, func(ctx context.Context, access string) error {
		return c.Client.DoJSON(ctx, op, http.MethodPost, storedURL(c.APIURL, storedID, "run"), access, body, &resp)
	})
	if err != nil {
		return "", err
	}
	var runID string
	if json.Unmarshal(resp.Data.ID, &runID) != nil || runID == "" {
		return "", &zapierapi.Error{Kind: zapierapi.KindFailed, Op: op, Err: errors.New("malformed response: no run id")}
	}
	return runID, nil
}

// getStoredRun reads a stored action's run once (the flat body).
func getStoredRun(ctx context.Context, c *gateway.Caller, id gateway.Identity, storedID, runID string) (zapierapi.ActionRun, error) {
	var resp struct {
		Status  json.RawMessage `json:"status"`
		Results json.RawMessage `json:"results"`
		Errors  json.RawMessage `json:"errors"`
	}
	const op = "get stored action run"
	err := c.Call(ctx, id, func(ctx context.Context, access string) error {
		return c.Client.DoJSON(ctx, op, http.MethodGet, storedURL(c.APIURL, storedID, "runs", runID), access, nil, &resp)
	})
	if err != nil {
		return zapierapi.ActionRun{}, err
	}
	var status string
	if json.Unmarshal(resp.Status, &status) != nil || status == "" {
		return zapierapi.ActionRun{}, &zapierapi.Error{Kind: zapierapi.KindFailed, Op: op, Err: errors.New("malformed response: no status")}
	}
	return zapierapi.ActionRun{ID: runID, Status: status, Results: emptyListOr(resp.Results), Errors: emptyListOr(resp.Errors)}, nil
}

func emptyListOr(raw json.RawMessage) json.RawMessage {
	if s := strings.TrimSpace(string(raw)); s == "" || s == "null" {
		return json.RawMessage("[]")
	}
	return raw
}

// storedGone reports whether Zapier answered that the stored action does
// not exist (deleted at Zapier, or never this user's).
func storedGone(err error) bool {
	zerr, ok := zapierapi.AsError(err)
	return ok && zerr.Kind == zapierapi.KindRejected && (zerr.StatusCode == http.StatusNotFound || zerr.StatusCode == http.StatusGone)
}

// storeRefused reports whether Zapier refused to create a stored action for
// the request (a non-core action, a partner without the Actions API, or a
// request it will not take), as opposed to being unavailable.
func storeRefused(err error) bool {
	zerr, ok := zapierapi.AsError(err)
	if !ok || zerr.Kind != zapierapi.KindRejected {
		return false
	}
	switch zerr.StatusCode {
	case http.StatusBadRequest, http.StatusForbidden, http.StatusNotFound, http.StatusMethodNotAllowed, http.StatusUnprocessableEntity:
		return true
	}
	return false
}
