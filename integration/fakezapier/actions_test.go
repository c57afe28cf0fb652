package fakezapier

import (
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"
)

const testApp = "81f613aa-c98a-4383-a5fc-195e68647217"

type listedAction struct {
	Type, ID, Key, App, Title, Description string
	ActionType                             string `json:"action_type"`
	IsInstant                              bool   `json:"is_instant"`
}

type actionList struct {
	Links struct{ Next, Prev *string }
	Meta  struct{ Count, Limit, Offset int }
	Data  []listedAction
}

func (e *env) listActions(tok, query string) actionList {
	e.t.Helper()
	res := e.api(http.MethodGet, "/v2/actions?"+query, tok, "")
	if res.status != http.StatusOK {
		e.t.Fatalf("list actions %s: HTTP %d %s", query, res.status, res.raw)
	}
	var l actionList
	if err := json.Unmarshal([]byte(res.raw), &l); err != nil {
		e.t.Fatal(err)
	}
	return l
}

// actionID lists the app's actions and returns the fresh id of key.
func (e *env) actionID(tok, app, key string) string {
	e.t.Helper()
	for _, a := range e.listActions(tok, "limit=1000&app="+app).Data {
		if a.Key == key {
			return a.ID
		}
	}
	e.t.Fatalf("no action %q in app %s", key, app)
	return ""
}

func runBody(action, auth, inputs string) string {
	return fmt.Sprintf(`{"data":{"action":%q,"authentication":%s,"inputs":%s}}`, action, auth, inputs)
}

func TestActionListingIssuesFreshIDs(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	var specs []ActionSpec
	for i := range 5 {
		specs = append(specs, ActionSpec{Key: fmt.Sprintf("k%d", i), ActionType: []string{"WRITE", "SEARCH"}[i%2], Title: fmt.Sprint("Action ", i)})
	}
	e.fz.SetActions(testApp, specs...)

	first := e.listActions(tok, "app="+testApp)
	second := e.listActions(tok, "app="+testApp)
	if first.Meta.Count != 5 || len(first.Data) != 5 || first.Links.Next != nil {
		t.Fatalf("listing: %+v", first)
	}
	seen := map[string]bool{}
	for i := range first.Data {
		a, b := first.Data[i], second.Data[i]
		if a.Key != b.Key || a.Key != specs[i].Key || a.Type != "action" || a.App != testApp || a.ActionType != specs[i].ActionType || a.Title != specs[i].Title {
			t.Errorf("item %d: %+v / %+v", i, a, b)
		}
		for _, id := range []string{a.ID, b.ID} {
			if seen[id] || !strings.HasPrefix(id, "core:") {
				t.Errorf("id %q reused or malformed", id)
			}
			seen[id] = true
		}
	}

	// Paging by limit/offset with links.next; action_type filters.
	page := e.listActions(tok, "limit=2&app="+testApp)
	if len(page.Data) != 2 || page.Links.Next == nil || page.Meta.Limit != 2 {
		t.Fatalf("page 1: %+v", page)
	}
	page = e.listActions(tok, strings.TrimPrefix(*page.Links.Next, e.srv.URL+"/v2/actions?"))
	if len(page.Data) != 2 || page.Data[0].Key != "k2" || page.Links.Prev == nil || page.Links.Next == nil {
		t.Fatalf("page 2: %+v", page)
	}
	if l := e.listActions(tok, "action_type=SEARCH&app="+testApp); l.Meta.Count != 2 || l.Data[0].Key != "k1" || l.Data[1].Key != "k3" {
		t.Errorf("SEARCH: %+v", l)
	}
	// Any other app has the default catalog.
	if l := e.listActions(tok, "app=other"); len(l.Data) != len(DefaultActions()) || l.Data[0].Key != "send_message" {
		t.Errorf("default catalog: %+v", l)
	}
	if st := e.fz.ActionStats(); st.Listings != 6 || st.ActionIDsIssued != 5+5+2+2+2+3 {
		t.Errorf("stats %+v", st)
	}

	for query, code := range map[string]string{"": "invalid", "app=x&action_type=DELETE": "invalid", "app=x&limit=0": "invalid"} {
		if r := e.api(http.MethodGet, "/v2/actions?"+query, tok, ""); r.status != http.StatusBadRequest || apiErrorCode(t, r) != code {
			t.Errorf("%q: HTTP %d %s", query, r.status, r.raw)
		}
	}
	narrow := e.postToken(jwtForm(e.mint(e.key("ES256"), "org", "alice"), "action:run"), false).str("access_token")
	if r := e.api(http.MethodGet, "/v2/actions?app=x", narrow, ""); r.status != http.StatusForbidden {
		t.Errorf("without scope zap: HTTP %d", r.status)
	}
	if r := e.api(http.MethodPost, "/v2/actions?app=x", tok, ""); r.status != http.StatusMethodNotAllowed {
		t.Errorf("POST: HTTP %d", r.status)
	}
}

func TestActionRunLifecycle(t *testing.T) {
	e := newEnv(t)
	k := e.key("ES256")
	alice := e.exchange(k, "org", "alice")
	bob := e.exchange(k, "org", "bob")
	conn := e.fz.AddConnection("org", "alice", testApp, "Alice's Slack")
	bobConn := e.fz.AddConnection("org", "bob", testApp, "Bob's Slack")
	otherApp := e.fz.AddConnection("org", "alice", "other-app", "Other")
	e.fz.SetActions(testApp, ActionSpec{Key: "send", Delay: 5 * time.Second,
		Inputs: []map[string]any{InputField("channel", "Channel", true)}})

	// Inputs: for an issued id, with the caller's connection or none.
	id := e.actionID(alice, testApp, "send")
	res := e.api(http.MethodPost, "/v2/actions/"+id+"/inputs", alice, `{"data":{"authentication":"`+conn+`","inputs":{}}}`)
	if res.status != http.StatusOK || !strings.Contains(res.raw, `"id":"channel"`) || !strings.Contains(res.raw, `"limit":null`) {
		t.Fatalf("inputs: HTTP %d %s", res.status, res.raw)
	}
	if r := e.api(http.MethodPost, "/v2/actions/"+id+"/inputs", alice, `{"data":{"authentication":null,"inputs":{}}}`); r.status != http.StatusOK {
		t.Errorf("inputs without a connection: HTTP %d %s", r.status, r.raw)
	}
	if r := e.api(http.MethodPost, "/v2/actions/"+id+"/inputs", alice, `{"data":{"authentication":"`+bobConn+`","inputs":{}}}`); r.status != http.StatusBadRequest {
		t.Errorf("inputs with bob's connection: HTTP %d %s", r.status, r.raw)
	}
	if r := e.api(http.MethodPost, "/v2/actions/core:nope/inputs", alice, `{"data":{}}`); r.status != http.StatusNotFound {
		t.Errorf("inputs of an unknown id: HTTP %d", r.status)
	}

	// Refusals: each leaves the id unused.
	for name, body := range map[string]string{
		"unknown id":         runBody("core:made-up", `"`+conn+`"`, `{}`),
		"bob's connection":   runBody(id, `"`+bobConn+`"`, `{}`),
		"other app":          runBody(id, `"`+otherApp+`"`, `{}`),
		"unknown connection": runBody(id, `"999"`, `{}`),
		"null connection":    runBody(id, `null`, `{}`),
		"no inputs":          fmt.Sprintf(`{"data":{"action":%q,"authentication":%q}}`, id, conn),
		"garbage":            `{"data":`,
	} {
		r := e.api(http.MethodPost, "/v2/action-runs", alice, body)
		if r.status != http.StatusBadRequest {
			t.Errorf("%s: HTTP %d %s", name, r.status, r.raw)
		}
	}
	e.fz.SetConnectionExpired(conn, true)
	if r := e.api(http.MethodPost, "/v2/action-runs", alice, runBody(id, `"`+conn+`"`, `{}`)); r.status != http.StatusBadRequest || !strings.Contains(r.raw, "expired") {
		t.Errorf("expired connection: HTTP %d %s", r.status, r.raw)
	}
	e.fz.SetConnectionExpired(conn, false)

	// The OpenAPI body; the connection id may be a number.
	res = e.api(http.MethodPost, "/v2/action-runs", alice, runBody(id, conn, `{"channel":"#general"}`))
	var created struct{ Data struct{ Type, ID string } }
	if err := json.Unmarshal([]byte(res.raw), &created); err != nil || res.status != http.StatusOK || created.Data.Type != "run" || len(created.Data.ID) != 36 {
		t.Fatalf("create: HTTP %d %s", res.status, res.raw)
	}
	runID := created.Data.ID
	if r := e.api(http.MethodPost, "/v2/action-runs/", alice, runBody(id, `"`+conn+`"`, `{}`)); r.status != http.StatusBadRequest || !strings.Contains(r.raw, "already used") {
		t.Errorf("reused id: HTTP %d %s", r.status, r.raw)
	}

	poll := func(tok string) (int, string) {
		r := e.api(http.MethodGet, "/v2/action-runs/"+runID, tok, "")
		return r.status, strings.TrimSpace(r.raw)
	}
	if status, body := poll(alice); status != http.StatusOK || body != `{"data":{"errors":[],"results":[],"status":"waiting","type":"run"}}` {
		t.Errorf("pending: HTTP %d %s", status, body)
	}
	if status, _ := poll(bob); status != http.StatusNotFound {
		t.Errorf("bob polls alice's run: HTTP %d", status)
	}
	e.advance(5 * time.Second)
	want := `{"data":{"errors":[],"results":[{"action":"send","id":1,"inputs":{"channel":"#general"}}],"status":"success","type":"run"}}`
	if status, body := poll(alice); status != http.StatusOK || body != want {
		t.Errorf("done: HTTP %d %s", status, body)
	}
	if r := e.api(http.MethodGet, "/v2/action-runs/"+runID+"/", alice, ""); r.status != http.StatusOK {
		t.Errorf("trailing slash: HTTP %d", r.status)
	}

	// The guides' flat body is accepted too.
	res = e.api(http.MethodPost, "/v2/action-runs/", alice, fmt.Sprintf(`{"action":%q,"authentication":%q,"input":{"channel":"#x"}}`, e.actionID(alice, testApp, "send"), conn))
	if res.status != http.StatusOK {
		t.Errorf("flat body: HTTP %d %s", res.status, res.raw)
	}
	runs := e.fz.ActionRuns()
	if len(runs) != 2 || runs[0].ID != runID || runs[0].ActionID != id || runs[0].Authentication != conn || string(runs[0].Inputs) != `{"channel":"#general"}` ||
		runs[0].Tenant != "org" || runs[0].User != "alice" || string(runs[1].Inputs) != `{"channel":"#x"}` {
		t.Errorf("runs %+v", runs)
	}
	if st := e.fz.ActionStats(); st.RunsCreated != 2 || st.ReusedActionIDs != 1 || st.RunsRefused != 9 || st.RunPolls != 3 || st.InputRequests != 2 {
		t.Errorf("stats %+v", st)
	}
}

func TestActionRunErrorsAndPendingStatus(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	conn := e.fz.AddConnection("org", "alice", testApp, "Slack")
	delay := 30
	e.fz.SetActions(testApp,
		ActionSpec{Key: "fails", Errors: []RunError{{Code: "throttled", Title: "Slow down", Detail: "try later", Delay: &delay}}},
		ActionSpec{Key: "slow", PendingStatus: "running", Delay: time.Minute, Results: []map[string]any{{"ok": true}}},
		ActionSpec{Key: "instant", Delay: -1})
	e.fz.SetActionRunDelay(2 * time.Second)

	start := func(key string) string {
		res := e.api(http.MethodPost, "/v2/action-runs", tok, runBody(e.actionID(tok, testApp, key), `"`+conn+`"`, `{}`))
		var c struct{ Data struct{ ID string } }
		if res.status != http.StatusOK || json.Unmarshal([]byte(res.raw), &c) != nil {
			t.Fatalf("create %s: HTTP %d %s", key, res.status, res.raw)
		}
		return c.Data.ID
	}
	status := func(id string) string {
		return strings.TrimSpace(e.api(http.MethodGet, "/v2/action-runs/"+id, tok, "").raw)
	}
	fails, slow, instant := start("fails"), start("slow"), start("instant")
	if s := status(instant); !strings.Contains(s, `"status":"success"`) {
		t.Errorf("instant: %s", s)
	}
	if s := status(fails); !strings.Contains(s, `"status":"waiting"`) {
		t.Errorf("fails before its delay: %s", s)
	}
	e.advance(2 * time.Second)
	if s := status(fails); s != `{"data":{"errors":[{"code":"throttled","title":"Slow down","detail":"try later","delay":30,"meta":null}],"results":[],"status":"error","type":"run"}}` {
		t.Errorf("fails: %s", s)
	}
	if s := status(slow); !strings.Contains(s, `"status":"running"`) {
		t.Errorf("slow: %s", s)
	}
	e.advance(time.Minute)
	if s := status(slow); !strings.Contains(s, `"results":[{"ok":true}],"status":"success"`) {
		t.Errorf("slow, later: %s", s)
	}
}

func TestRateLimits(t *testing.T) {
	e := newEnv(t)
	tok := e.exchange(e.key("ES256"), "org", "alice")
	e.fz.SetRateLimits(RateLimits{PerIP: 3, Window: time.Minute, Cooldown: 30 * time.Second})
	for i := range 3 {
		if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
			t.Fatalf("request %d: HTTP %d", i, r.status)
		}
	}
	r := e.api(http.MethodGet, "/v2/actions?app=x", tok, "")
	if r.status != http.StatusTooManyRequests || apiErrorCode(t, r) != "throttled" || r.header.Get("Retry-After") != "30" || r.header.Get("X-RateLimit-Limit") != "3" {
		t.Fatalf("4th request: HTTP %d %v %s", r.status, r.header, r.raw)
	}
	// Unauthenticated requests count per IP too; the cooldown counts down.
	e.advance(10 * time.Second)
	if r := e.api(http.MethodGet, "/v2/echo", "", ""); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "20" {
		t.Errorf("during the cooldown: HTTP %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	// Another address has its own budget.
	other := &http.Client{Transport: &http.Transport{DialContext: (&net.Dialer{LocalAddr: &net.TCPAddr{IP: net.ParseIP("127.0.0.2")}}).DialContext}}
	req, _ := http.NewRequest(http.MethodGet, e.srv.URL+"/v2/echo", nil)
	req.Header.Set("Authorization", "Bearer "+tok)
	if resp, err := other.Do(req); err != nil || resp.StatusCode != http.StatusOK {
		t.Errorf("from 127.0.0.2: %v %v", resp, err)
	} else {
		resp.Body.Close()
	}
	e.advance(21 * time.Second)
	if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
		t.Errorf("after the cooldown: HTTP %d", r.status)
	}

	// Per partner: only requests with the partner's tokens count.
	e.fz.SetRateLimits(RateLimits{PerPartner: 2, Cooldown: time.Second})
	for range 5 {
		e.api(http.MethodGet, "/v2/echo", "", "")
	}
	e.api(http.MethodGet, "/v2/echo", tok, "")
	e.api(http.MethodGet, "/v2/echo", tok, "")
	if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "1" {
		t.Errorf("3rd partner request: HTTP %d, Retry-After %q", r.status, r.header.Get("Retry-After"))
	}
	if st := e.fz.ActionStats(); st.Throttled != 3 {
		t.Errorf("throttled = %d, want 3", st.Throttled)
	}

	// Off by default and with the zero value.
	e.fz.SetRateLimits(RateLimits{})
	for i := range 200 {
		if r := e.api(http.MethodGet, "/v2/echo", tok, ""); r.status != http.StatusOK {
			t.Fatalf("unlimited request %d: HTTP %d", i, r.status)
		}
	}
	if DocumentedRateLimits.PerIP != 60 || DocumentedRateLimits.PerPartner != 150 || DocumentedRateLimits.Cooldown != time.Minute {
		t.Errorf("documented limits %+v", DocumentedRateLimits)
	}
}
