package integration

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/zapgate/caddy-zapier/integration/fakezapier"
)

// A client that goes away after Zapier created its run does not lose the
// run: the key is finished with that run (202, Location runs/{id}), so the
// retry with the same key gets the same run, 200 once it has ended, and
// Zapier saw exactly one create.
func TestRunIdempotencyKeySurvivesClientDisconnect(t *testing.T) {
	g := startActionsGateway(t, fakezapier.ActionSpec{Key: "send_message", Delay: 2 * time.Second})
	g.actConnect("org", "alice")
	g.fake.ResetCounts()
	runBody := `{"app":"` + actApp + `","action":"send_message","inputs":{"text":"once"},"wait":"60s"}`
	header := http.Header{"Content-Type": {"application/json"}, "Idempotency-Key": {"gone-1"}}

	// The first request waits for the run; its client hangs up as soon as
	// the fake has created the run.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gatewayURL+"/zapier/actions/run", strings.NewReader(runBody))
	if err != nil {
		t.Fatal(err)
	}
	req.Header = header.Clone()
	req.Header.Set("X-Zapier-Tenant", "org")
	req.Header.Set("X-Zapier-User", "alice")
	gone := make(chan error, 1)
	go func() {
		resp, err := (&http.Client{}).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		gone <- err
	}()
	eventually(t, 20*time.Second, "the fake to create the run", func() bool { return g.fake.ActionStats().RunsCreated == 1 })
	cancel()
	if err := <-gone; err == nil {
		t.Fatal("the first request was answered before its client went away")
	}
	runs := g.fake.ActionRuns()
	if len(runs) != 1 {
		t.Fatalf("%d runs at the fake", len(runs))
	}

	retry := func() (int, http.Header, actRun) {
		t.Helper()
		status, hdr, body := g.do(request{method: http.MethodPost, path: "/zapier/actions/run", tenant: "org", user: "alice", body: runBody, header: header})
		if status != http.StatusOK && status != http.StatusAccepted {
			t.Fatalf("retry: %d %s", status, body)
		}
		if hdr.Get("Idempotent-Replayed") != "true" {
			t.Errorf("retry not replayed: %d %s", status, body)
		}
		return status, hdr, actDecodeRun(t, body)
	}
	status, hdr, run := retry()
	if run.ID != runs[0].ID {
		t.Fatalf("retry answered run %s, the fake created %s", run.ID, runs[0].ID)
	}
	if status == http.StatusAccepted && hdr.Get("Location") != "runs/"+run.ID {
		t.Errorf("202 Location %q", hdr.Get("Location"))
	}
	// Once the run has ended, the retry answers its result.
	eventually(t, 30*time.Second, "the retry to answer the ended run", func() bool {
		status, _, run = retry()
		return status == http.StatusOK
	})
	if run.ID != runs[0].ID || run.Status != "success" {
		t.Errorf("ended run %+v, want %s success", run, runs[0].ID)
	}
	calls := g.fake.CallCounts() // a stored action's run (run_via auto) or a /v2 one
	if n := calls["POST /v2/action-runs"] + calls["POST /actions/v1/stored-actions/{id}/run"]; n != 1 || g.fake.ActionStats().RunsCreated != 1 {
		t.Errorf("Zapier saw %d creates (%d runs) for one key", n, g.fake.ActionStats().RunsCreated)
	}
}
