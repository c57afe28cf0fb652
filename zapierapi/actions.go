package zapierapi

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
)

// Paging of GET /v2/actions, as for authentications: a large page keeps the
// common case to one request, the page bound stops an endless listing.
const (
	actionsPageSize = 100
	maxActionsPages = 100
)

// Run statuses that end a run (zapier-api.md §4.6). Zapier documents
// "waiting" as the only other one, its guides also "queued" and "running":
// anything that is not one of these two means the run is still going.
const (
	RunStatusSuccess = "success"
	RunStatusError   = "error"
)

// ActionTypes are the action_type values GET /v2/actions filters by.
var ActionTypes = []string{"READ", "READ_BULK", "SEARCH", "SEARCH_AND_WRITE", "SEARCH_OR_WRITE", "WRITE"}

// ValidActionType reports whether t is one of ActionTypes.
func ValidActionType(t string) bool {
	for _, v := range ActionTypes {
		if t == v {
			return true
		}
	}
	return false
}

// Action is one of an app's actions, as listed by GET /v2/actions
// (zapier-api.md §4.3).
type Action struct {
	// ID is unstable: Zapier issues a fresh one on every listing and asks
	// for a fresh one before every run. Persist Key, never ID.
	ID         string
	Key        string // the developer's stable key
	App        string // the app's UUID
	ActionType string // READ, WRITE, SEARCH, …
	IsInstant  bool
	Title      string
	// Description may be empty.
	Description string
}

type actionsPage struct {
	Links struct {
		Next json.RawMessage `json:"next"`
	} `json:"links"`
	Meta struct {
		Count *int `json:"count"`
	} `json:"meta"`
	Data []struct {
		ID          json.RawMessage `json:"id"`
		Key         json.RawMessage `json:"key"`
		App         json.RawMessage `json:"app"`
		ActionType  json.RawMessage `json:"action_type"`
		IsInstant   *bool           `json:"is_instant"`
		Title       json.RawMessage `json:"title"`
		Description json.RawMessage `json:"description"`
	} `json:"data"`
}

// ListActions lists every action of app (the app's UUID), following all
// pages; actionType ("" for all) narrows the list. Like ListAuthentications
// it pages by offset on apiURL and never follows links.next, so the bearer
// token only goes to the configured API.
func (c *Client) ListActions(ctx context.Context, apiURL, accessToken, app, actionType string) ([]Action, error) {
	const op = "list actions"
	if app == "" {
		return nil, fmt.Errorf("%w: %s: empty app", ErrInvalidInput, op)
	}
	if actionType != "" && !ValidActionType(actionType) {
		return nil, fmt.Errorf("%w: %s: unknown action type", ErrInvalidInput, op)
	}
	base := strings.TrimRight(apiURL, "/") + "/v2/actions"
	var out []Action
	offset := 0
	for page := 0; ; page++ {
		if page == maxActionsPages {
			return nil, &Error{Kind: KindFailed, Op: op, Err: fmt.Errorf("more than %d pages", maxActionsPages)}
		}
		q := url.Values{
			"app":    {app},
			"limit":  {strconv.Itoa(actionsPageSize)},
			"offset": {strconv.Itoa(offset)},
		}
		if actionType != "" {
			q.Set("action_type", actionType)
		}
		var p actionsPage
		if err := c.doJSON(ctx, op, http.MethodGet, base+"?"+q.Encode(), accessToken, nil, &p); err != nil {
			return nil, err
		}
		for _, item := range p.Data {
			id, okID := idString(item.ID)
			key, okKey := jsonString(item.Key)
			if !okID || !okKey || key == "" {
				return nil, &Error{Kind: KindFailed, Op: op,
					Err: errors.New("malformed response: an action without an id or a key")}
			}
			a := Action{ID: id, Key: key, App: appID(item.App), IsInstant: item.IsInstant != nil && *item.IsInstant}
			a.ActionType, _ = jsonString(item.ActionType)
			a.Title, _ = jsonString(item.Title)
			a.Description, _ = jsonString(item.Description)
			out = append(out, a)
		}
		if len(out) > maxListedItems {
			return nil, &Error{Kind: KindFailed, Op: op, Err: fmt.Errorf("more than %d actions", maxListedItems)}
		}
		offset += len(p.Data)
		more := !isNull(p.Links.Next) || (p.Meta.Count != nil && offset < *p.Meta.Count)
		if !more || len(p.Data) == 0 {
			return out, nil
		}
	}
}

// actionData is the {"data":{…}} body of the inputs and action-runs calls.
// Its fields are in the order the API reference shows them.
type actionData struct {
	Data struct {
		Action         string          `json:"action,omitempty"`
		Authentication *string         `json:"authentication"`
		Inputs         json.RawMessage `json:"inputs"`
		CallbackURL    string          `json:"callback_url,omitempty"`
	} `json:"data"`
}

func newActionData(action, authentication string, inputs json.RawMessage) (*actionData, error) {
	inputs, err := inputsObject(inputs)
	if err != nil {
		return nil, err
	}
	body := new(actionData)
	body.Data.Action = action
	if authentication != "" {
		body.Data.Authentication = &authentication
	}
	body.Data.Inputs = inputs
	return body, nil
}

// inputsObject checks that inputs is one JSON object (nil or null mean {}).
func inputsObject(inputs json.RawMessage) (json.RawMessage, error) {
	inputs = bytes.TrimSpace(inputs)
	if len(inputs) == 0 || bytes.Equal(inputs, []byte("null")) {
		return json.RawMessage("{}"), nil
	}
	if inputs[0] != '{' || !json.Valid(inputs) {
		return nil, errors.New("inputs must be a JSON object")
	}
	return inputs, nil
}

// ActionInputs returns the input fields of an action (POST
// /v2/actions/{id}/inputs, zapier-api.md §4.4) for the given connection
// ("" when the app needs none) and current input values. The items are
// returned as Zapier sent them: input fields, info fields and fieldsets.
func (c *Client) ActionInputs(ctx context.Context, apiURL, accessToken, actionID, authentication string, inputs json.RawMessage) ([]json.RawMessage, error) {
	const op = "action inputs"
	if actionID == "" {
		return nil, fmt.Errorf("%w: %s: empty action id", ErrInvalidInput, op)
	}
	body, err := newActionData("", authentication, inputs)
	if err != nil {
		return nil, fmt.Errorf("%w: %s: %v", ErrInvalidInput, op, err)
	}
	var resp struct {
		Data []json.RawMessage `json:"data"`
	}
	u := strings.TrimRight(apiURL, "/") + "/v2/actions/" + url.PathEscape(actionID) + "/inputs"
	if err := c.doJSON(ctx, op, http.MethodPost, u, accessToken, body, &resp); err != nil {
		return nil, err
	}
	if resp.Data == nil {
		return nil, &Error{Kind: KindFailed, Op: op, Err: errors.New("malformed response: no data")}
	}
	return resp.Data, nil
}

// ActionRunRequest is what POST /v2/action-runs needs.
type ActionRunRequest struct {
	// Action is a fresh action id from ListActions, never a reused one.
	Action string
	// Authentication is the connection id; "" sends null (an app without
	// authentication).
	Authentication string
	// Inputs is a JSON object keyed by input field id; nil sends {}.
	Inputs json.RawMessage
	// CallbackURL, when set, asks Zapier to POST the finished run there
	// (zapier-api-2026.md §2), inside data as the API reference shows.
	CallbackURL string
}

// CreateActionRun starts a run (POST /v2/action-runs, zapier-api.md §4.5)
// with the body the API reference documents,
// {"data":{"action","authentication","inputs"}}, and returns the run id.
// It is sent once: a failed creation is never retried, so an action never
// runs twice because of the gateway.
func (c *Client) CreateActionRun(ctx context.Context, apiURL, accessToken string, run ActionRunRequest) (string, error) {
	const op = "create action run"
	if run.Action == "" {
		return "", fmt.Errorf("%w: %s: empty action id", ErrInvalidInput, op)
	}
	body, err := newActionData(run.Action, run.Authentication, run.Inputs)
	if err != nil {
		return "", fmt.Errorf("%w: %s: %v", ErrInvalidInput, op, err)
	}
	body.Data.CallbackURL = run.CallbackURL
	var resp struct {
		Data struct {
			ID json.RawMessage `json:"id"`
		} `json:"data"`
	}
	u := strings.TrimRight(apiURL, "/") + "/v2/action-runs"
	if err := c.doJSON(ctx, op, http.MethodPost, u, accessToken, body, &resp); err != nil {
		return "", err
	}
	id, ok := idString(resp.Data.ID)
	if !ok {
		// The run may exist; without its id nobody can follow it.
		return "", &Error{Kind: KindFailed, Op: op, Err: errors.New("malformed response: no run id")}
	}
	return id, nil
}

// ActionRun is the state of a run (GET /v2/action-runs/{id},
// zapier-api.md §4.6).
type ActionRun struct {
	ID     string
	Status string // success, error, or anything else while it runs
	// Results and Errors are passed on as Zapier sent them; "[]" when
	// Zapier sent none.
	Results json.RawMessage
	Errors  json.RawMessage
}

// Done reports whether the run has finished (success or error).
func (r ActionRun) Done() bool {
	return r.Status == RunStatusSuccess || r.Status == RunStatusError
}

// GetActionRun polls a run once. It is a GET, so transient failures are
// retried like any other idempotent call.
func (c *Client) GetActionRun(ctx context.Context, apiURL, accessToken, runID string) (ActionRun, error) {
	const op = "get action run"
	if runID == "" {
		return ActionRun{}, fmt.Errorf("%w: %s: empty run id", ErrInvalidInput, op)
	}
	var resp struct {
		Data struct {
			Status  json.RawMessage `json:"status"`
			Results json.RawMessage `json:"results"`
			Errors  json.RawMessage `json:"errors"`
		} `json:"data"`
	}
	u := strings.TrimRight(apiURL, "/") + "/v2/action-runs/" + url.PathEscape(runID)
	if err := c.doJSON(ctx, op, http.MethodGet, u, accessToken, nil, &resp); err != nil {
		return ActionRun{}, err
	}
	status, ok := jsonString(resp.Data.Status)
	if !ok || status == "" {
		return ActionRun{}, &Error{Kind: KindFailed, Op: op, Err: errors.New("malformed response: no status")}
	}
	return ActionRun{ID: runID, Status: status, Results: orEmptyList(resp.Data.Results), Errors: orEmptyList(resp.Data.Errors)}, nil
}

func orEmptyList(raw json.RawMessage) json.RawMessage {
	if isNull(raw) {
		return json.RawMessage("[]")
	}
	return raw
}
