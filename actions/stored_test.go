package actions

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/gateway"
)

// storedStub serves the Actions API v1's stored actions on the stub API
// (through its fault hook): creates number sa-1, sa-2, …; runs number
// srun-1, …; refuse makes creates answer 400 (a non-core action); gone
// holds stored actions deleted at Zapier.
type storedStub struct {
	mu      sync.Mutex
	creates int
	runs    int
	deletes []string
	refuse  bool
	gone    map[string]bool
	bodies  []string // create bodies
}

func (e *actionsEnv) withStored(via RunVia) *storedStub {
	st := &storedStub{gone: map[string]bool{}}
	e.api.setFault(func(w http.ResponseWriter, r *http.Request, c stubCall) bool {
		rest, ok := strings.CutPrefix(c.path, "/actions/v1/stored-actions")
		if !ok {
			return false
		}
		st.mu.Lock()
		defer st.mu.Unlock()
		w.Header().Set("Content-Type", "application/json")
		seg := strings.Split(strings.TrimPrefix(rest, "/"), "/")
		switch {
		case rest == "" && r.Method == http.MethodPost:
			if st.refuse {
				w.WriteHeader(http.StatusBadRequest)
				fmt.Fprint(w, `{"errors":[{"status":400,"code":"invalid","title":"ValidationError","detail":"action_key: Only core actions can be stored."}]}`)
				return true
			}
			st.creates++
			st.bodies = append(st.bodies, c.body)
			w.WriteHeader(http.StatusCreated)
			fmt.Fprintf(w, `{"type":"stored_action","id":"sa-%d"}`, st.creates)
		case len(seg) == 1 && r.Method == http.MethodDelete:
			st.deletes = append(st.deletes, seg[0])
			if st.gone[seg[0]] {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"errors":[{"status":404,"code":"not_found"}]}`)
				return true
			}
			st.gone[seg[0]] = true
			w.WriteHeader(http.StatusNoContent)
		case len(seg) == 2 && seg[1] == "run" && r.Method == http.MethodPost:
			if st.gone[seg[0]] {
				w.WriteHeader(http.StatusNotFound)
				fmt.Fprint(w, `{"errors":[{"status":404,"code":"not_found"}]}`)
				return true
			}
			st.runs++
			w.WriteHeader(http.StatusAccepted)
			fmt.Fprintf(w, `{"data":{"type":"run","id":"srun-%d"}}`, st.runs)
		case len(seg) == 3 && seg[1] == "runs" && r.Method == http.MethodGet:
			fmt.Fprintf(w, `{"type":"run","id":%q,"status":"success","results":[{"via":"stored"}],"next_page":"0","errors":[]}`, seg[2])
		default:
			w.WriteHeader(http.StatusNotFound)
			fmt.Fprint(w, `{"errors":[{"status":404,"code":"not_found"}]}`)
		}
		return true
	})
	e.cfg.RunVia = via
	e.h = e.handler(e.cfg)
	return st
}

func (st *storedStub) counts() (creates, runs int) {
	st.mu.Lock()
	defer st.mu.Unlock()
	return st.creates, st.runs
}

const runBodyWrite = `{"app":"SlackCLIAPI","action":"send_message","action_type":"WRITE","inputs":{"channel":"#general"}}`

func TestStoredRunsCostOneCallEach(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	for i := 1; i <= 3; i++ {
		res := e.do(http.MethodPost, "/run", "alice", runBodyWrite)
		want := fmt.Sprintf(`{"run":{"id":"srun-%d","status":"success","results":[{"via":"stored"}],"errors":[]}}`+"\n", i)
		if res.status != http.StatusOK || res.body != want {
			t.Fatalf("run %d: %d %s", i, res.status, res.body)
		}
	}
	if creates, runs := st.counts(); creates != 1 || runs != 3 {
		t.Errorf("%d creates, %d runs; want 1 and 3", creates, runs)
	}
	if st.bodies[0] != `{"data":{"selected_api":"SlackCLIAPI","action_type":"write","action_key":"send_message","connection_id":"555"}}` {
		t.Errorf("create body %s", st.bodies[0])
	}
	if n := len(e.api.callsTo(http.MethodGet, "/v2/actions")) + len(e.api.callsTo(http.MethodPost, "/v2/action-runs")); n != 0 {
		t.Errorf("%d calls to the /v2 action path", n)
	}
	// A run body carries the inputs and no callback (none configured).
	runs := e.api.callsTo(http.MethodPost, "/actions/v1/stored-actions/sa-1/run")
	if len(runs) != 3 || runs[0].body != `{"data":{"inputs":{"channel":"#general"}}}` {
		t.Errorf("run calls %+v", runs)
	}
	// runs/{id} polls the stored action's run.
	if res := e.do(http.MethodGet, "/runs/srun-2", "alice", ""); res.status != http.StatusOK || !strings.Contains(res.body, `"via":"stored"`) {
		t.Errorf("GET runs/srun-2: %d %s", res.status, res.body)
	}
	if n := len(e.api.callsTo(http.MethodGet, "/actions/v1/stored-actions/sa-1/runs/srun-2")); n < 1 {
		t.Errorf("runs/{id} did not poll the stored run")
	}
	// Another connection is another stored action.
	e.connect("alice", "556")
	if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","connection_id":"556","action":"send_message","action_type":"WRITE"}`); res.status != http.StatusOK {
		t.Fatalf("run on 556: %d %s", res.status, res.body)
	}
	if creates, _ := st.counts(); creates != 2 {
		t.Errorf("%d creates after a run on another connection, want 2", creates)
	}
}

func TestStoredRunWithoutActionTypeListsOnce(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	for range 2 {
		if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"find_user"}`); res.status != http.StatusOK {
			t.Fatalf("run: %d %s", res.status, res.body)
		}
	}
	if n := len(e.api.callsTo(http.MethodGet, "/v2/actions")); n != 1 {
		t.Errorf("%d listings, want 1 (the first run learns the type)", n)
	}
	if !strings.Contains(st.bodies[0], `"action_type":"search"`) {
		t.Errorf("create body %s", st.bodies[0])
	}
	if res := e.do(http.MethodPost, "/run", "alice", `{"app":"SlackCLIAPI","action":"nope"}`); res.status != http.StatusNotFound || res.code() != "action_not_found" {
		t.Errorf("unknown action: %d %s", res.status, res.body)
	}
}

func TestStoredActionGoneAtZapierIsRecreated(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	if res := e.do(http.MethodPost, "/run", "alice", runBodyWrite); res.status != http.StatusOK {
		t.Fatalf("run: %d %s", res.status, res.body)
	}
	st.mu.Lock()
	st.gone["sa-1"] = true
	st.mu.Unlock()
	res := e.do(http.MethodPost, "/run", "alice", runBodyWrite)
	if res.status != http.StatusOK || !strings.Contains(res.body, `"id":"srun-2"`) {
		t.Fatalf("run after the stored action was deleted: %d %s", res.status, res.body)
	}
	if creates, runs := st.counts(); creates != 2 || runs != 2 {
		t.Errorf("%d creates, %d runs; want 2 and 2", creates, runs)
	}
	if n := len(e.api.callsTo(http.MethodPost, "/actions/v1/stored-actions/sa-2/run")); n != 1 {
		t.Errorf("%d runs of the new stored action", n)
	}
}

func TestStoreRefusalFallsBackOnceAndIsRemembered(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	st.refuse = true
	for i := range 2 {
		res := e.do(http.MethodPost, "/run", "alice", runBodyWrite)
		if res.status != http.StatusOK || !strings.Contains(res.body, `"id":"run-`) {
			t.Fatalf("run %d: %d %s", i, res.status, res.body)
		}
	}
	if n := len(e.api.callsTo(http.MethodPost, "/actions/v1/stored-actions")); n != 1 {
		t.Errorf("%d create attempts, want 1 (the refusal is remembered)", n)
	}
	if n := len(e.api.callsTo(http.MethodPost, "/v2/action-runs")); n != 2 {
		t.Errorf("%d /v2/action-runs, want 2", n)
	}
	// Forgetting the user forgets the refusal too; nothing to delete at Zapier.
	rep, err := e.h.StoredActions().Forget(context.Background(), gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 1 || rep.Upstream != 0 {
		t.Errorf("Forget = %+v, %v", rep, err)
	}
}

func TestRunViaStoredRefusesAnUnstorableAction(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaStored)
	st.refuse = true
	e.api.set(func(s *stubAPI) {
		s.auths = `[{"type":"authentication","id":"555","app":"` + slackUUID + `","is_expired":false,"title":"a"}]`
	})
	res := e.do(http.MethodPost, "/run", "alice", runBodyWrite)
	if res.status != http.StatusBadRequest || res.code() != "action_not_storable" {
		t.Fatalf("run: %d %s", res.status, res.body)
	}
	if n := len(e.api.callsTo(http.MethodPost, "/v2/action-runs")); n != 0 {
		t.Errorf("run_via stored fell back (%d /v2/action-runs)", n)
	}
	// The refusal is not remembered under run_via stored: the next run asks again.
	e.do(http.MethodPost, "/run", "alice", runBodyWrite)
	if n := len(e.api.callsTo(http.MethodPost, "/actions/v1/stored-actions")); n != 2 {
		t.Errorf("%d create attempts, want 2", n)
	}
}

func TestForgetDeletesStoredActions(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	for _, b := range []struct{ user, conn, body string }{
		{"alice", "", runBodyWrite}, // sa-1 on 555
		{"alice", "556", `{"app":"SlackCLIAPI","connection_id":"556","action":"send_message","action_type":"WRITE"}`}, // sa-2
		{"bob", "777", runBodyWrite}, // sa-3
	} {
		if b.conn != "" {
			e.connect(b.user, b.conn)
		}
		if res := e.do(http.MethodPost, "/run", b.user, b.body); res.status != http.StatusOK {
			t.Fatalf("run: %d %s", res.status, res.body)
		}
	}
	ctx := context.Background()
	store := e.h.StoredActions()
	// A disconnect of 556 deletes its stored action only.
	if n, err := store.ForgetConnection(ctx, gateway.Identity{Tenant: "org", User: "alice"}, "556", false); n != 1 || err != nil {
		t.Fatalf("ForgetConnection = %d, %v", n, err)
	}
	if strings.Join(st.deletes, ",") != "sa-2" {
		t.Errorf("deleted at Zapier: %v", st.deletes)
	}
	// keep_upstream forgets the records only.
	rep, err := store.Forget(ctx, gateway.Scope{Tenant: "org", User: "bob", KeepUpstream: true})
	if err != nil || rep.Deleted != 1 || rep.Upstream != 0 || len(st.deletes) != 1 {
		t.Errorf("Forget(bob, keep_upstream) = %+v %v; deletes %v", rep, err, st.deletes)
	}
	// Offboarding alice deletes the rest at Zapier; again finds nothing.
	rep, err = store.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"})
	if err != nil || rep.Deleted != 1 || rep.Upstream != 1 || strings.Join(st.deletes, ",") != "sa-2,sa-1" {
		t.Errorf("Forget(alice) = %+v %v; deletes %v", rep, err, st.deletes)
	}
	if rep, err = store.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"}); err != nil || rep.Deleted != 0 {
		t.Errorf("second Forget(alice) = %+v %v", rep, err)
	}
	// A stored action Zapier no longer has is forgotten all the same.
	if res := e.do(http.MethodPost, "/run", "alice", runBodyWrite); res.status != http.StatusOK {
		t.Fatalf("run: %d %s", res.status, res.body)
	}
	st.mu.Lock()
	st.gone[fmt.Sprintf("sa-%d", st.creates)] = true
	st.mu.Unlock()
	if rep, err = store.Forget(ctx, gateway.Scope{Tenant: "org", User: "alice"}); err != nil || rep.Deleted != 1 || rep.Upstream != 0 {
		t.Errorf("Forget of a gone stored action = %+v %v", rep, err)
	}
}

func TestParseRunVia(t *testing.T) {
	for in, want := range map[string]RunVia{"": RunViaAuto, "auto": RunViaAuto, "stored": RunViaStored, "action_runs": RunViaActionRuns} {
		if got, err := ParseRunVia(in); got != want || err != nil {
			t.Errorf("ParseRunVia(%q) = %q, %v", in, got, err)
		}
	}
	if _, err := ParseRunVia("v2"); err == nil {
		t.Error("ParseRunVia(v2) accepted")
	}
	if _, err := NewHandler(HandlerConfig{RunVia: "nope"}); err == nil {
		t.Error("NewHandler accepted run_via nope")
	}
}

func TestConcurrentFirstRunsCreateOneStoredAction(t *testing.T) {
	e := newActionsEnv(t)
	st := e.withStored(RunViaAuto)
	var wg sync.WaitGroup
	codes := make([]int, 6)
	for i := range codes {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i] = e.do(http.MethodPost, "/run", "alice", runBodyWrite).status
		}()
	}
	wg.Wait()
	for i, c := range codes {
		if c != http.StatusOK {
			t.Errorf("run %d: %d", i, c)
		}
	}
	if creates, runs := st.counts(); creates != 1 || runs != 6 {
		t.Errorf("%d creates, %d runs for 6 concurrent first runs; want 1 and 6", creates, runs)
	}
}

// unitsBudget records what each run prepays.
type unitsBudget struct {
	mu    sync.Mutex
	units []int
}

func (b *unitsBudget) Prepay(ctx context.Context, _ string, units int) (context.Context, error) {
	b.mu.Lock()
	b.units = append(b.units, units)
	b.mu.Unlock()
	return ctx, nil
}
func (b *unitsBudget) Urgent(ctx context.Context) context.Context { return ctx }
func (b *unitsBudget) Queued() time.Duration                      { return 0 }

func (b *unitsBudget) take() []int {
	b.mu.Lock()
	defer b.mu.Unlock()
	u := b.units
	b.units = nil
	return u
}

func TestStoredRunsPrepayTheirCalls(t *testing.T) {
	e := newActionsEnv(t)
	budget := new(unitsBudget)
	e.cfg.Budget = budget
	st := e.withStored(RunViaAuto)
	run := func(body string) {
		t.Helper()
		if res := e.do(http.MethodPost, "/run", "alice", body); res.status != http.StatusOK {
			t.Fatalf("run: %d %s", res.status, res.body)
		}
	}
	run(runBodyWrite) // create + run
	run(runBodyWrite) // run
	if got := fmt.Sprint(budget.take()); got != "[2 1]" {
		t.Errorf("prepaid %s, want [2 1]", got)
	}
	run(`{"app":"SlackCLIAPI","action":"find_user"}`) // listing + create + run
	if got := fmt.Sprint(budget.take()); got != "[3]" {
		t.Errorf("without action_type: prepaid %s, want [3]", got)
	}
	st.mu.Lock()
	st.gone["sa-1"] = true
	st.mu.Unlock()
	run(runBodyWrite) // run (404) + create + run
	if got := fmt.Sprint(budget.take()); got != "[1 1]" {
		t.Errorf("recreated: prepaid %s, want [1 1]", got)
	}
	st.refuse = true
	e.connect("alice", "556")
	run(runBodyWrite) // refused create, then the /v2 lookup and create
	if got := fmt.Sprint(budget.take()); got != "[2 2]" {
		t.Errorf("refused: prepaid %s, want [2 2]", got)
	}
}
